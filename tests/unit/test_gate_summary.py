"""scripts/gate_summary.py: the means of a run's logged gates over the second half, per run or per method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import gate_summary


def _run(root: Path, method: str, seed: int, miou: float, rows: list[tuple[int, float, float]]) -> Path:
    run = root / f"{method}_{seed}"
    (run / "csv").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"method": method, "seed": seed, "mIoU": miou}))
    lines = ["step,train/pseudo_weight,train/pseudo_precision"] + [f"{s},{w},{p}" for s, w, p in rows]
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_summary_means_from_step_and_weight_on_right_and_wrong(tmp_path):
    run = _run(tmp_path, "mic", 0, 30.0, [(100, 9.0, 0.0), (600, 0.3, 0.8), (700, 0.5, 0.6)])
    s = gate_summary.summarize(run, from_step=500)
    assert s["pseudo_weight"] == pytest.approx(0.4) and s["pseudo_precision"] == pytest.approx(0.7)
    assert s["weight_on_right"] == pytest.approx(0.28) and s["weight_on_wrong"] == pytest.approx(0.12)


def test_unfinished_run_is_skipped(tmp_path):
    run = _run(tmp_path, "mic", 0, 30.0, [(600, 0.3, 0.8)])
    (run / "results.json").unlink()
    assert gate_summary.summarize(run, from_step=500) is None


def test_by_method_averages_over_seeds(tmp_path, capsys):
    runs = [
        _run(tmp_path, "mic", 0, 30.0, [(600, 0.2, 0.5)]),
        _run(tmp_path, "mic", 1, 32.0, [(600, 0.4, 0.5)]),
        _run(tmp_path, "omuda", 0, 31.0, [(600, 0.3, 1.0)]),
    ]
    assert gate_summary.main([*map(str, runs), "--from-step", "500", "--by-method"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["method"] for r in rows] == ["mic", "omuda"]
    mic = rows[0]
    assert mic["runs"] == 2 and mic["seeds"] == [0, 1] and mic["mIoU"] == pytest.approx(31.0)
    assert mic["weight_on_wrong"] == pytest.approx(0.15) and rows[1]["weight_on_wrong"] == pytest.approx(0.0)

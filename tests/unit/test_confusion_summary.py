"""scripts/confusion_summary.py: thing pixels right / into the most frequent wrong class, per method."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from src.data.classes import CITYSCAPES_CLASSES

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "confusion_summary", ROOT / "scripts" / "confusion_summary.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(d: Path, method: str, seed: int, m: np.ndarray) -> None:
    (d / "val_dashboard").mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"method": method, "seed": seed, "mIoU": 1.0}))
    lines = ["ground truth \\ prediction," + ",".join(CITYSCAPES_CLASSES)]
    lines += [f"{n}," + ",".join(str(int(x)) for x in row) for n, row in zip(CITYSCAPES_CLASSES, m)]
    (d / "val_dashboard" / "step000100_confusion.csv").write_text("\n".join(lines) + "\n")
    # an earlier validation that must not be read
    (d / "val_dashboard" / "step000050_confusion.csv").write_text("\n".join(lines[:1]) + "\n")


def test_sums_seeds_and_names_the_sink(tmp_path, capsys):
    car, bus, building = 13, 15, 2
    a = np.zeros((19, 19))
    a[car, car], a[car, building] = 30, 70  # seed 0: 30 % of car right, 70 % building
    b = np.zeros((19, 19))
    b[car, car], b[car, bus], b[bus, bus] = 50, 30, 20  # seed 1
    _run(tmp_path / "multi" / "0", "dacs", 0, a)
    _run(tmp_path / "multi" / "sub" / "1", "dacs", 1, b)  # found at any depth, as aggregate_results does
    assert _load().main([str(tmp_path / "multi"), "--classes", "car", "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    # thing pixels: car 100 + 80, bus 20 -> right (30 + 50 + 20) / 200 = 50 %, building 70 / 200 = 35 %;
    # car: 80 / 180 = 44 % right, 70 / 180 = 39 % building
    assert out[2] == "| dacs | 0,1 | 50% | building 35% | car 44%, building 39% |"
    with pytest.raises(SystemExit, match="unknown class 'cars'"):
        _load().main([str(tmp_path / "multi"), "--classes", "cars"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="neither a run"):
        _load().main([str(tmp_path / "empty")])

"""Rare Class Sampling: statistics, probabilities, file choice, missing-stats error (daformer_mic.md §1.7)."""

from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.data.rare_class_sampling import RareClassSampler, compute_class_stats, write_class_stats

REPO = Path(__file__).resolve().parents[2]

STATS = [
    {"file": "a.png", "counts": {0: 5000, 1: 100}},
    {"file": "b.png", "counts": {1: 4000}},
    {"file": "c.png", "counts": {2: 3500, 1: 3001}},
    {"file": "d.png", "counts": {2: 2000}},
    {"file": "e.png", "counts": {0: 600, 3: 2500}},
]
# N = {0: 5600, 1: 7101, 2: 5500, 3: 2500}, total 20701


def _expected_probs(t: float) -> list[float]:
    n = [5600, 7101, 5500, 2500]
    logits = [(1 - c / sum(n)) / t for c in n]
    e = [math.exp(v - max(logits)) for v in logits]
    return [v / sum(e) for v in e]


def test_probabilities_hand_computed_softmax() -> None:
    rcs = RareClassSampler(stats=STATS, temperature=0.1)
    assert rcs.classes == (0, 1, 2, 3)
    np.testing.assert_allclose(rcs.probabilities, _expected_probs(0.1), rtol=1e-12)
    # T = 0.01 (default): the rarest class dominates
    default = RareClassSampler(stats=STATS)
    np.testing.assert_allclose(default.probabilities, _expected_probs(0.01), rtol=1e-9)
    assert default.probabilities.argmax() == 3
    assert default.min_crop_pixels == 1500  # 3000 * 0.5


def test_eligible_files_and_fallback() -> None:
    rcs = RareClassSampler(stats=STATS, temperature=0.1)
    assert rcs.files_for(0) == ["a.png"]  # e has 600 <= 3000
    assert sorted(rcs.files_for(1)) == ["b.png", "c.png"]  # a has 100, c has 3001 > 3000
    assert rcs.files_for(2) == ["c.png"]
    assert rcs.files_for(3) == ["e.png"]  # 2500 <= 3000 everywhere: fallback to the most pixels


def test_sampling_frequencies_follow_p_and_min_pixels() -> None:
    rcs = RareClassSampler(stats=STATS, temperature=0.1)
    rng = np.random.default_rng(0)
    draws = [rcs.sample(rng) for _ in range(4000)]
    freq = Counter(c for c, _ in draws)
    for c, p in zip(rcs.classes, rcs.probabilities):
        assert abs(freq[c] / 4000 - p) < 0.03
    files_1 = Counter(f for c, f in draws if c == 1)
    assert set(files_1) == {"b.png", "c.png"} and abs(files_1["b.png"] / sum(files_1.values()) - 0.5) < 0.06
    assert all(f != "d.png" for _, f in draws)  # d only has 2000 px of class 2
    assert RareClassSampler(stats=STATS, temperature=0.1).sample(np.random.default_rng(0)) == draws[0]


def test_missing_stats_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        RareClassSampler.from_root(tmp_path)
    msg = str(e.value)
    assert "sample_class_stats.json" in msg and f"python scripts/compute_class_stats.py {tmp_path}" in msg


def _write_labels(root: Path) -> list[Path]:
    (root / "labels").mkdir(parents=True)
    a = np.full((40, 50), 255, np.uint8)
    a[:10] = 0
    a[10:20, :25] = 13
    b = np.full((40, 50), 2, np.uint8)
    b[0, 0] = 18
    paths = [root / "labels" / "a.png", root / "labels" / "b.png"]
    Image.fromarray(a).save(paths[0])
    Image.fromarray(b).save(paths[1])
    return paths


def test_compute_write_and_load_stats(tmp_path: Path) -> None:
    paths = _write_labels(tmp_path)
    stats = compute_class_stats(paths, root=tmp_path, progress=False)
    assert stats == [
        {"file": "labels/a.png", "counts": {0: 500, 13: 250}},
        {"file": "labels/b.png", "counts": {2: 1999, 18: 1}},
    ]
    assert compute_class_stats(paths, num_workers=2, root=tmp_path, progress=False) == stats
    write_class_stats(tmp_path, stats)
    swc = json.loads((tmp_path / "samples_with_class.json").read_text())
    assert swc == {"0": [["labels/a.png", 500]], "2": [["labels/b.png", 1999]], "13": [["labels/a.png", 250]],
                   "18": [["labels/b.png", 1]]}  # fmt: skip
    rcs = RareClassSampler.from_root(tmp_path, min_pixels=100)
    assert rcs.classes == (0, 2, 13, 18)
    assert rcs.files_for(18) == ["labels/b.png"]  # fallback (1 px)


def test_script_writes_stats_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_labels(tmp_path)
    spec = importlib.util.spec_from_file_location(
        "compute_class_stats", REPO / "scripts" / "compute_class_stats.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "car" in out and "250" in out
    assert json.loads((tmp_path / "sample_class_stats.json").read_text())[0]["counts"] == {
        "0": 500,
        "13": 250,
    }

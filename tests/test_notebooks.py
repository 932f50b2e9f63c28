"""The notebooks run top to bottom on tiny synthetic data and show what they claim; git holds no outputs.

Each notebook ends by printing `SUMMARY {json}`: the numbers it computed, checked here against properties
derived by hand (e.g. CAM keeps the expected masked share at exactly the MIC ratio, the rare-class sampler's
draws follow P(c), the results table is the mean ± sample std over seeds, warping with the exact flow
beats not warping).
"""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from tests.conftest import ROOT

pytest.importorskip("nbclient")
pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOKS = ROOT / "notebooks"
NAMES = ("strategy_gallery", "data_and_sampling", "results", "video_and_flow")
MAX_SECONDS = 30.0


def _tool():
    spec = importlib.util.spec_from_file_location("notebooks_tool", ROOT / "scripts" / "notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(name: str) -> tuple[object, dict, float]:
    """Execute notebooks/<name>.ipynb in a fresh kernel; returns (executed notebook, summary, seconds)."""
    tool = _tool()
    t0 = time.perf_counter()
    nb = tool.execute(NOTEBOOKS / f"{name}.ipynb", timeout=120)
    seconds = time.perf_counter() - t0
    text = tool.stream_text(nb)
    lines = [ln for ln in text.splitlines() if ln.startswith("SUMMARY ")]
    assert len(lines) == 1, text[-3000:]
    errors = [o for o in tool.outputs_of(nb) if o.get("output_type") == "error"]
    assert not errors
    return nb, json.loads(lines[0][len("SUMMARY ") :]), seconds


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in _tool().outputs_of(nb))


def test_notebooks_are_stored_without_outputs():
    import nbformat

    tool = _tool()
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == sorted(NAMES)
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert not tool.has_outputs(nb), f"{name}.ipynb holds outputs: python scripts/notebooks.py strip"
        assert nb.cells[0].cell_type == "markdown"


def test_strip_removes_outputs(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    tool = _tool()
    out = new_output("stream", name="stdout", text="1\n")
    nb = new_notebook(cells=[new_code_cell("print(1)", execution_count=3, outputs=[out])])
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    assert tool.main(["check", str(path)]) == 1
    assert tool.strip(path) is True and tool.strip(path) is False
    back = nbformat.read(path, as_version=4)
    assert back.cells[0].outputs == [] and back.cells[0].execution_count is None
    assert tool.main(["check", str(path)]) == 0


def test_strategy_gallery(monkeypatch):
    monkeypatch.setenv("NB_HEIGHT", "64")
    monkeypatch.setenv("NB_WIDTH", "128")
    monkeypatch.setenv("NB_BATCH", "2")
    nb, s, seconds = _run("strategy_gallery")
    assert seconds < MAX_SECONDS
    assert _images(nb) == 7  # batch, ClassMix, MIC/CAM, CDM maps, CDM keep rates, QuadMix, side by side
    # ClassMix pastes half of the batch's classes: a real share of the pixels, not none or all
    assert 0.05 < s["classmix_source_fraction"] < 0.95
    # MIC drops ~70 % of the cells (64x128 at block 4 = 16x32 cells per image: binomial, sd ~ 0.02)
    assert abs(s["mic_masked_fraction"] - 0.7) < 0.08
    # CAM: rho*r_fg + (1-rho)*r_bg == r exactly (rebalance), foreground masked less than background
    assert s["cam_expected_ratio"] == pytest.approx([0.7, 0.7], abs=1e-5)
    if s["cam_masked_fg"] is not None:
        assert s["cam_masked_fg"] < s["cam_masked_bg"]
    # CDM: every present class keeps at least its floor (20 %), and wrong pixels weigh less than right ones
    assert s["cdm_min_keep_rate"] >= 0.2 - 1e-6
    assert s["cdm_weight_wrong"] is None or s["cdm_weight_wrong"] < s["cdm_weight_correct"]
    # QuadMix: two trained samples with loss weight 0.5 each (its in-notebook asserts check the pastes)
    assert s["quadmix_loss_weights"] == [0.5, 0.5]
    assert s["quadmix_source_paste"] > 0


def test_data_and_sampling(monkeypatch, data_dir):
    monkeypatch.setenv("NB_SYNTHETIC_ROOT", str(data_dir / "synthetic"))
    monkeypatch.setenv("NB_CROP", "64")
    monkeypatch.setenv("NB_MIN_PIXELS", "20")
    monkeypatch.setenv("NB_RCS_DRAWS", "2000")
    monkeypatch.setenv("NB_CROPS", "60")
    nb, s, seconds = _run("data_and_sampling")
    assert seconds < MAX_SECONDS
    assert _images(nb) == 5
    assert s["num_source"] == 12 and s["num_target"] == 12  # the conftest dataset, not regenerated
    assert s["p_sum"] == pytest.approx(1.0)
    assert s["rarest_has_max_p"] is True  # softmax((1 - f_c) / T) is largest for the smallest f_c
    assert s["max_abs_dev"] < 0.05  # 2000 draws: sd of a frequency <= 0.011
    assert s["rare_share_rcs"] > s["rare_share_uniform"]  # RCS shows the rare classes more


def test_results(monkeypatch, tmp_path):
    per = ["road", "car"]
    for method, values in {"source_only": (30.0, 32.0), "dacs": (40.0, 44.0), "mic": (45.0, 47.0)}.items():
        for seed, v in enumerate(values):
            d = tmp_path / "runs" / f"{method}_{seed}"
            d.mkdir(parents=True)
            r = {"mIoU": v, "per_class": {c: v + i for i, c in enumerate(per)}, "subsets": {"19": v},
                 "method": method, "data": "synthetic", "model": "daformer_mitb0", "seed": seed,
                 "steps": 100}  # fmt: skip
            (d / "results.json").write_text(json.dumps(r))
    monkeypatch.setenv("NB_RESULTS_DIRS", str(tmp_path / "runs"))
    monkeypatch.delenv("NB_WANDB_PROJECT", raising=False)
    nb, s, seconds = _run("results")
    assert seconds < MAX_SECONDS
    assert s == {"runs": 6, "groups": 3, "best": {"synthetic": "mic"}}
    text = _tool().stream_text(nb)
    # mean ± sample std over the two seeds: (45, 47) -> 46.0 ± 1.4, (40, 44) -> 42.0 ± 2.8
    assert "| mic | synthetic | daformer_mitb0 | 100 | 0,1 | 46.0 ± 1.4 |" in text
    assert "| dacs | synthetic | daformer_mitb0 | 100 | 0,1 | 42.0 ± 2.8 |" in text
    assert _images(nb) == 2  # mIoU per method, per-class IoU


def test_video_and_flow(monkeypatch):
    monkeypatch.setenv("NB_HEIGHT", "64")
    monkeypatch.setenv("NB_WIDTH", "128")
    monkeypatch.setenv("NB_CLIPS", "3")
    monkeypatch.setenv("NB_SEED", "0")
    nb, s, seconds = _run("video_and_flow")
    assert seconds < MAX_SECONDS
    # clips + flow, warping, DIS vs exact, flip, TPS pseudo-labels
    assert _images(nb) == s["images"] == 5
    # warping t-1 with the exact flow leaves resampling (+ the target's sensor noise, sigma 4 a frame; the
    # README's 1.08 / 4.25 at 128x256): far below not warping at all
    for d in ("source", "target"):
        assert s[f"warp_mae_{d}"] < 0.5 * s[f"warp_mae_zero_flow_{d}"]
    assert s["warp_mae_source"] < s["warp_mae_zero_flow"]
    assert s["warp_mae_source"] < 3.0 and s["warp_mae_target"] < 6.0
    # DIS (medium) is sub-pixel on these clips (README: 0.41 / 0.30 px) and well below zero flow's EPE
    assert s["dis_epe"] < 1.0
    for d in ("source", "target"):
        assert s[f"dis_epe_{d}"] < 0.6 * s[f"zero_flow_epe_{d}"]
    # warp(flip(I), flip_flow(f)) == flip(warp(I, f)) up to float rounding (~1e-5 / 255); without negating u
    # (the TPS quirk) every pixel samples 2u off: errors of ~10 / 255
    assert s["flip_equivariance_err"] < 1e-3
    assert s["flip_quirk_err"] > 1.0 and s["flip_equivariance_err"] < 1e-3 * s["flip_quirk_err"]
    # resize_flow scales the components: unscaled displacements (twice too long at half size) warp worse
    assert s["resize_warp_mae"] < s["resize_unscaled_warp_mae"]
    # TPS: a perfect teacher on t-1, warped to t, matches label t except at occlusions and label edges.
    # Measured 0.958 at 64x128 over these 6 clips; over 60 clips per domain (seeds [0, k, i]) the mean is
    # 0.96 and the worst single clip 0.945, so 0.9 leaves a margin. Warping must beat not warping, and the
    # flip quirk (mirrored weak view, u not negated) must lose agreement.
    assert s["tps_label_agreement"] > 0.9 and s["tps_label_agreement_min"] > 0.9
    assert s["tps_label_agreement"] > s["tps_label_agreement_zero_flow"]
    assert s["tps_label_agreement_flip_quirk"] < s["tps_label_agreement"]

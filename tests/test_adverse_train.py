"""Cityscapes -> ACDC and -> Dark Zurich end to end on tiny trees in the release layouts (64x128 images):
scripts/prepare_data.py, 2 training steps of every new experiment (a CPU-sized model of the same kind,
validation on the target's val split at step 2), src.eval on a checkpoint, the benchmark-server export, and a
run whose dataset is absent."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from src.submission import BENCHMARKS, check_submission, find_test_images, result_name
from src.train import train
from src.uda.masking.mic import MaskedImageConsistency
from tests.conftest import FAST_TRAINER, ROOT, compose_cfg
from tests.unit.test_adverse_datasets import H, W, make_acdc, make_dark_zurich
from tests.unit.test_prepare_data import make_cityscapes, run_script

METHODS = ("daformer", "hrda", "mic_hrda", "omuda_hrda", "udass_hrda")
EXPERIMENTS = [f"{m}_{d}" for d in ("acdc", "darkzurich") for m in METHODS]
MASKED = ("mic_", "omuda_", "udass_")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("adverse_train")
    make_cityscapes(root / "cityscapes", counts={"train": 4, "val": 1}, h=H, w=W)
    make_acdc(root / "acdc", counts={"train": 1, "val": 1, "test": 1})
    make_dark_zurich(root / "dark_zurich", counts={"train": 2, "val": 2, "test": 2})
    for dataset in ("cityscapes", "acdc", "dark_zurich"):
        assert run_script(dataset, root / dataset, "--workers", "1") == 0
    return root


def tiny(experiment: str) -> list[str]:
    """The experiment on a CPU-sized model of the same kind and 64x64 crops of the 64x128 images."""
    hrda = "_hrda_" in experiment
    o = [
        f"experiment={experiment}", *FAST_TRAINER, "trainer.max_steps=2", "trainer.val_check_interval=2",
        "model=hrda_daformer_mitb0" if hrda else "model=daformer_mitb0", "model.head_channels=16",
        "data.crop_size=[64,64]", "data.num_workers=0", "data.source_scale=null", "data.target_scale=null",
        "data.val_scale=null", "uda.rcs.min_pixels=50",
    ]  # fmt: skip
    if not experiment.startswith("omuda_"):  # OMUDA keeps FDM: its target term reads the separate pair
        o.append("uda/fd=none")
    if hrda:  # the paper's geometry / 16: detail crop 32 of the 64 crop, test window 64 at stride 32
        o += ["model.hrda.hr_crop_size=[32,32]", "eval.crop_size=[64,64]", "eval.stride=[32,32]"]
    if experiment.startswith(MASKED):
        o.append("uda.mask.masker.block_size=8")
    if experiment.startswith("udass_"):
        o += [
            "uda.mix.quadmix_start=1",
            "uda.mix.rare_paster.resize=null",
            "uda.mix.rare_paster.min_pixels=5",
        ]
    return o


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_two_training_steps(experiment, data_root, tmp_path, monkeypatch):
    """Each experiment trains 2 steps on Cityscapes -> its target and evaluates the target's val split; the
    MIC-host ones train their masked loss on one Cityscapes image (its labels) and one target image."""
    seen = []
    inputs = MaskedImageConsistency.inputs

    def spy(self, x_s, y_s, x_t, y_t, w_t, p_t=None):
        m = inputs(self, x_s, y_s, x_t, y_t, w_t, p_t)
        seen.append((self.mode, m.x.shape[0], bool((m.y[0] == y_s[0]).all()), bool((m.x[1] == x_t[0]).all())))
        return m

    monkeypatch.setattr(MaskedImageConsistency, "inputs", spy)
    cfg = compose_cfg("train", [f"paths.data_dir={data_root}", f"paths.output_dir={tmp_path / 'run'}",
                                *tiny(experiment)])  # fmt: skip
    out = train(cfg)
    target = "acdc" if experiment.endswith("_acdc") else "darkzurich"
    assert out["steps"] == 2 and out["data"].startswith(f"cityscapes_to_{target}")
    assert set(out["subsets"]) == {"19"} and out["mIoU"] is not None and 0.0 <= out["mIoU"] <= 100.0
    metrics = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/loss_mix" in metrics and "val/mIoU" in metrics
    if experiment.startswith(MASKED):
        assert "train/loss_mask" in metrics
        assert seen and all(s == ("separate", 2, True, True) for s in seen), seen
    else:
        assert not seen
    # DAFormer's 15 / 120 rows of a 512 crop (experiments.py id 8) at the 64 crop; none for the HRDA host
    rows = [int(r) for r in cfg.data.pseudo_label_rows]
    assert rows == ([2, 15] if experiment.startswith("daformer_") else [0, 0])


def test_eval_and_benchmark_exports(data_root, tmp_path):
    """A trained Cityscapes -> ACDC checkpoint: src.eval on ACDC val reproduces the run's mIoU, and
    format=submission writes ACDC's zip (and, from the same model, Dark Zurich's three folders), checked
    against the servers' rules written out here."""
    from src.eval import evaluate
    from src.predict import predict

    cfg = compose_cfg("train", [f"paths.data_dir={data_root}", f"paths.output_dir={tmp_path / 'run'}",
                                *tiny("mic_hrda_acdc")])  # fmt: skip
    results = train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ecfg = compose_cfg("eval", [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}",
                                "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"])  # fmt: skip
    ev = evaluate(ecfg)
    assert ev["mIoU"] == pytest.approx(results["mIoU"])

    for name, folder, n in (
        ("acdc", data_root / "acdc" / "rgb_anon", 4),
        ("dark_zurich", data_root / "dark_zurich", 2),
    ):
        pcfg = compose_cfg("predict", [f"ckpt_path={ckpt}", f"input={folder}", f"output={tmp_path / 'sub'}",
                                       "format=submission", "device=cpu", "progress=false"])  # fmt: skip
        out = predict(pcfg)
        b = BENCHMARKS[name]
        assert out["benchmark"] == name and out["count"] == n
        _, images = find_test_images(folder, name)
        assert check_submission(b, out["zip"], images) == []
        with zipfile.ZipFile(out["zip"]) as z:
            names = sorted(z.namelist())
            want = sorted(f"{f}/{result_name(b, p)}" for f in b.folders for p in images)
            assert names == want  # ACDC: labelTrainIds/<seq>_frame_<n>.png; Dark Zurich: three folders
            a = cv2.imdecode(np.frombuffer(z.read(f"labelTrainIds/{result_name(b, images[0])}"), np.uint8),
                             cv2.IMREAD_UNCHANGED)  # fmt: skip
        assert a.dtype == np.uint8 and a.shape == (H, W) and a.max() <= 18  # train ids at the image's size
    bad = [f"ckpt_path={ckpt}", f"input={data_root / 'dark_zurich'}", "format=submission", "device=cpu",
           f"output={tmp_path / 'bad'}", "submission.invalid_below=2"]  # fmt: skip
    with pytest.raises(ValueError, match=r"submission.invalid_below=2: a confidence in \[0, 1\]"):
        predict(compose_cfg("predict", bad))


def test_a_run_without_the_dataset_names_the_path_and_the_command(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "src.train", "experiment=mic_hrda_acdc", f"paths.data_dir={tmp_path}",
         f"hydra.run.dir={tmp_path / 'run'}", "model=hrda_daformer_mitb0", "model.head_channels=16",
         "trainer.accelerator=cpu", "logger=csv"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"ACDC root {tmp_path / 'acdc'} does not exist" in lines[0]
    assert f"python scripts/prepare_data.py acdc {tmp_path / 'acdc'}" in lines[0]

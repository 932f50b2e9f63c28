"""Every method trains a few steps end to end on the synthetic data and writes results.json;
a resumed run matches an uninterrupted one; checkpoints load and evaluate without Hydra."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.train import train
from src.uda.module import load_module
from tests.conftest import FAST_TRAINER, compose_cfg

RESULT_KEYS = {"mIoU", "per_class", "subsets", "method", "data", "model", "seed", "steps"}


@pytest.mark.parametrize(
    "experiment, losses",
    [
        ("source_only_synthetic", {"train/loss_src"}),
        ("oracle_synthetic", {"train/loss_src"}),
        (
            "dacs_synthetic",
            {"train/loss_src", "train/loss_mix", "train/pseudo_weight", "train/pseudo_accuracy"},
        ),
        ("daformer_synthetic", {"train/loss_src", "train/loss_fd", "train/loss_mix"}),
        ("mic_synthetic", {"train/loss_src", "train/loss_fd", "train/loss_mix", "train/loss_mask"}),
        (
            "omuda_synthetic",
            {
                "train/loss_fd",
                "train/loss_mask",
                "train/loss_fdm",
                "train/cam_fg_cells",
                "train/cdm_keep_rate",
                "train/fdm_active_cells",
                "train/pseudo_accuracy",
            },
        ),  # fmt: skip
        ("udass_synthetic", {"train/loss_mix", "train/loss_mask"}),
        ("omuda_udass_synthetic", {"train/loss_mix", "train/loss_fdm", "train/cdm_keep_rate"}),
    ],
)
def test_each_method_runs_and_writes_results(train_cfg, experiment, losses):
    extra = ["uda.mix.quadmix_start=1"] if "udass" in experiment else []  # QuadMix from the 2nd step on
    cfg = train_cfg(f"experiment={experiment}", *extra)
    results = train(cfg)
    out = json.loads(Path(cfg.paths.output_dir, "results.json").read_text())
    assert RESULT_KEYS <= set(out) and out == results
    assert out["steps"] == 3 and out["data"] == "synthetic" and out["model"] == "daformer_mitb0"
    assert len(out["per_class"]) == 19 and set(out["subsets"]) == {"19"}
    assert out["mIoU"] is not None and 0.0 <= out["mIoU"] <= 100.0
    metrics = Path(cfg.paths.output_dir, "csv", "metrics.csv").read_text().splitlines()[0].strip().split(",")
    assert losses <= set(metrics), metrics
    if experiment not in ("source_only_synthetic", "oracle_synthetic"):
        assert "teacher_mIoU" in out


def _assert_same(a, b, key: str) -> None:
    """Tensors equal bit for bit; extra states (QuadMix memory) compared recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), key
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), key
        for k in a:
            _assert_same(a[k], b[k], f"{key}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), key
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{key}[{i}]")
    else:
        assert a == b, key


@pytest.mark.parametrize(
    "method",
    [
        ["experiment=mic_synthetic"],
        # CDM running statistics (buffers) and QuadMix's one-step memory must come back from the checkpoint
        ["experiment=omuda_udass_synthetic", "uda.mix.quadmix_start=1", "uda.mix.feature_mix=true"],
    ],
)
def test_resume_matches_uninterrupted_run(train_cfg, tmp_path, method):
    """Stop-and-resume from the step-2 checkpoint of a 4-step run reproduces the run bit for bit."""
    common = [*method, "trainer.max_steps=4", "trainer.val_check_interval=2"]
    train(train_cfg(*common, f"paths.output_dir={tmp_path / 'full'}"))
    mid = tmp_path / "full" / "checkpoints" / "step000002.ckpt"
    assert mid.is_file()
    train(train_cfg(*common, f"paths.output_dir={tmp_path / 'resumed'}", f"ckpt_path={mid}"))
    a = load_module(tmp_path / "full" / "checkpoints" / "last.ckpt").state_dict()
    b = load_module(tmp_path / "resumed" / "checkpoints" / "last.ckpt").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        _assert_same(a[k], b[k], k)
    # ... and the resumed run really trained: its weights moved away from the step-2 checkpoint
    c = load_module(mid).state_dict()
    assert any(not torch.equal(b[k], c[k]) for k in b if k.startswith("student."))


def test_checkpoint_loads_and_evaluates_without_hydra(train_cfg, tmp_path, data_dir):
    cfg = train_cfg("experiment=dacs_synthetic")
    results = train(cfg)
    ckpt = f"{cfg.paths.output_dir}/checkpoints/last.ckpt"
    module = load_module(ckpt)
    assert module.teacher is not None and not module.training
    from src.eval import evaluate

    ecfg = compose_cfg("eval", [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}",
                                "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"])  # fmt: skip
    ev = evaluate(ecfg)
    assert ev["mIoU"] == pytest.approx(results["mIoU"])
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["ckpt_path"] == ckpt


def test_bad_checkpoints_give_one_readable_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_module(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        load_module(bad)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="no library config"):
        load_module(tmp_path / "other.ckpt")


def test_folder_dataset_nobody_prepared(tmp_path):
    """data=folder with a 3-class classes file: trains, evaluates, writes results.json."""
    rng = np.random.default_rng(0)
    for split in ("src", "tgt", "val"):
        for sub in ("images", "labels"):
            (tmp_path / split / sub).mkdir(parents=True)
        for i in range(4):
            lab = np.zeros((48, 64), np.uint8)
            lab[16:, :] = 1
            lab[30:40, 20:40] = 2
            lab[0, 0] = 255
            img = np.stack([lab * 80 + rng.integers(0, 30, lab.shape)] * 3, -1).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / split / "images" / f"f{i}.jpg")
            Image.fromarray(lab).save(tmp_path / split / "labels" / f"f{i}.png")
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\n")
    cfg = compose_cfg("train", [
        "data=folder", f"data.source_dir={tmp_path / 'src'}", f"data.target_dir={tmp_path / 'tgt'}",
        f"data.val_dir={tmp_path / 'val'}", f"data.classes_file={tmp_path / 'classes.txt'}",
        "data.crop_size=[32,32]", "data.num_workers=0", "uda=source_only", "model=daformer_mitb0",
        f"paths.output_dir={tmp_path / 'run'}", *FAST_TRAINER,
    ])  # fmt: skip
    out = train(cfg)
    assert list(out["per_class"]) == ["sky", "road", "car"]
    assert set(out["subsets"]) == {"all"} and out["data"] == "folder"


def _bn_buffers(path) -> dict[str, torch.Tensor]:
    sd = load_module(path).state_dict()
    bn = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in sd.items() if k.startswith("student.") and k.endswith(bn)}


def test_masked_forward_with_frozen_bn_statistics_leaves_them_to_the_other_forwards(train_cfg, tmp_path):
    """uda.mask.update_bn_stats=false (src/uda/masking/mic.py): after a MIC step the student's BN running
    statistics are exactly those of the same step without the masked term (source and mixed forwards only);
    with MIC's default (true) the masked forward moves them; every other tensor (student and teacher weights)
    is the same with the switch on or off."""
    common = ["experiment=mic_synthetic", "trainer.max_steps=1", "trainer.val_check_interval=1"]
    runs = {"frozen": ["uda.mask.update_bn_stats=false"], "updated": [], "no_mask": ["uda/mask=none"]}
    bufs = {}
    for name, extra in runs.items():
        cfg = train_cfg(*common, *extra, f"paths.output_dir={tmp_path / name}")
        train(cfg)
        bufs[name] = _bn_buffers(tmp_path / name / "checkpoints" / "last.ckpt")
    assert bufs["frozen"] and bufs["frozen"].keys() == bufs["no_mask"].keys()
    for k in bufs["frozen"]:
        assert torch.equal(bufs["frozen"][k], bufs["no_mask"][k]), k
    assert any(not torch.equal(bufs["updated"][k], bufs["no_mask"][k]) for k in bufs["no_mask"])
    frozen = load_module(tmp_path / "frozen" / "checkpoints" / "last.ckpt").state_dict()
    updated = load_module(tmp_path / "updated" / "checkpoints" / "last.ckpt").state_dict()
    assert frozen.keys() == updated.keys()
    differ = {k for k in frozen if not torch.equal(frozen[k], updated[k])}
    assert differ and differ <= set(bufs["frozen"])  # the student's BN buffers, nothing else


def test_bn_recalibrate_script_reproduces_the_stored_number(train_cfg, tmp_path):
    """scripts/bn_recalibrate.py: `stored` is the run's own mIoU; a re-estimate changes only BN buffers."""
    import importlib.util

    cfg = train_cfg("experiment=mic_synthetic", "trainer.max_steps=1", "trainer.val_check_interval=1")
    results = train(cfg)
    path = Path(__file__).resolve().parents[1] / "scripts" / "bn_recalibrate.py"
    spec = importlib.util.spec_from_file_location("bn_recalibrate", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ckpt = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    out = tmp_path / "bn.md"
    script.main([str(ckpt), "--batches", "2", "--recipes", "stored,source+target", "--out", str(out)])
    (row,) = json.loads(out.with_suffix(".json").read_text())
    assert row["stored"] == pytest.approx(results["mIoU"]) and 0.0 <= row["source+target"] <= 100.0
    assert "| mic | 0 |" in out.read_text()
    with pytest.raises(SystemExit, match="unknown"):
        script.main([str(ckpt), "--recipes", "val"])

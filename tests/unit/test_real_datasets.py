"""GTA5 / SYNTHIA / Cityscapes readers, their start-up errors, the data and experiment configs, the
evaluation protocols, and a 2-step training run on a tiny GTA5 -> Cityscapes tree."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from src.data.datasets.cityscapes import CityscapesDataset
from src.data.datasets.gta5 import GTA5Dataset
from src.data.datasets.synthia import SynthiaDataset
from src.metrics.miou import resolve_subsets, summarize
from src.train import build_datamodule
from tests.conftest import FAST_TRAINER, compose_cfg
from tests.unit.test_prepare_data import H, W, make_cityscapes, make_gta, make_synthia, run_script

EXPERIMENTS = ["daformer_gta", "daformer_synthia", "mic_gta", "mic_synthia", "source_only_gta",
               "source_only_synthia"]  # fmt: skip
DATA_CONFIGS = ["gta_to_cityscapes", "gta_to_cityscapes_hr", "synthia_to_cityscapes",
                "synthia_to_cityscapes_hr", "cityscapes"]  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """DATA_ROOT with prepared gta/, synthia/, cityscapes/ (4 + 3 + 4/2 frames of 32x64)."""
    root = tmp_path_factory.mktemp("real")
    exp = {
        "gta": make_gta(root / "gta", n=4),
        "synthia": make_synthia(root / "synthia", n=3),
        "cityscapes": make_cityscapes(root / "cityscapes", counts={"train": 4, "val": 2}),
    }
    for dataset, sub in (("gta5", "gta"), ("synthia", "synthia"), ("cityscapes", "cityscapes")):
        assert run_script(dataset, root / sub, "--workers", "1") == 0
    return root, exp


def _copy(tree, tmp_path, sub):
    shutil.copytree(tree[0] / sub, tmp_path / sub)
    return tmp_path / sub


# ------------------------------------------------------------------------------------------ readers
@pytest.mark.parametrize("cls, sub", [(GTA5Dataset, "gta"), (SynthiaDataset, "synthia")])
def test_source_readers_load_prepared_train_ids(tree, cls, sub):
    root, exp = tree
    ds = cls(root / sub)
    assert len(ds) == len(exp[sub]) and [ds.name(i) for i in range(len(ds))] == sorted(exp[sub])
    for i in range(len(ds)):
        img, lab = ds.load(i)
        assert img.shape == (H, W, 3) and img.dtype == np.uint8
        assert lab.dtype == np.uint8 and (lab == exp[sub][ds.name(i)]).all()
    # every file the rare-class statistics name resolves to its sample
    stats = json.loads((root / sub / "sample_class_stats.json").read_text())
    assert [ds.index_of(s["file"]) for s in stats] == list(range(len(ds)))
    assert ds.label_key(0) == stats[0]["file"]


def test_cityscapes_reader_splits_and_names(tree):
    root, exp = tree
    val = CityscapesDataset(root / "cityscapes", split="val")
    assert [val.name(i) for i in range(len(val))] == sorted(exp["cityscapes"]["val"])
    for i in range(len(val)):
        assert (val.load(i)[1] == exp["cityscapes"]["val"][val.name(i)]).all()
    target = CityscapesDataset(root / "cityscapes", split="train", labels=False)
    assert len(target) == 4 and target.load(0)[1] is None
    assert target.name(0) == "aachen_000000_000000"
    oracle = CityscapesDataset(root / "cityscapes", split="train")
    assert oracle.label_key(0) == "gtFine/train/aachen/aachen_000000_000000_gtFine_labelTrainIds.png"


# ------------------------------------------------------------------------------------------ errors
def test_missing_root_and_split_name_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"GTA5 root {tmp_path / 'gta'} does not exist.*DATA_ROOT.*"
                       rf"python scripts/prepare_data.py gta5 {tmp_path / 'gta'}"):  # fmt: skip
        GTA5Dataset(tmp_path / "gta")
    make_cityscapes(tmp_path / "cityscapes", counts={"train": 1})
    with pytest.raises(
        FileNotFoundError, match=rf"no folder {tmp_path / 'cityscapes' / 'leftImg8bit' / 'val'}"
    ):
        CityscapesDataset(tmp_path / "cityscapes", split="val")


def test_unprepared_partly_prepared_and_missing_stats(tmp_path):
    root = tmp_path / "synthia"
    make_synthia(root, n=2)
    cmd = f"`python scripts/prepare_data.py synthia {root}`"
    with pytest.raises(FileNotFoundError, match=r"labels are not prepared: 2 of 2") as e:
        SynthiaDataset(root)
    assert cmd in str(e.value)
    assert SynthiaDataset(root, labels=False).load(0)[1] is None  # unlabelled use needs no preparation
    assert run_script("synthia", root, "--workers", "1") == 0
    (root / "GT" / "LABELS_trainids" / "0000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"only partly prepared: 1 of 2.*0000001.png") as e:
        SynthiaDataset(root)
    assert cmd in str(e.value)
    assert run_script("synthia", root, "--workers", "1") == 0
    (root / "sample_class_stats.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"statistics .*sample_class_stats.json do not exist") as e:
        SynthiaDataset(root)
    assert cmd in str(e.value)
    assert len(SynthiaDataset(root, require_stats=False)) == 2


def test_datamodule_setup_fails_in_main_process_with_one_message(tmp_path, tree):
    """data=gta_to_cityscapes with GTA5 copied but not prepared: setup() raises the reader's message."""
    shutil.copytree(tree[0] / "cityscapes", tmp_path / "cityscapes")
    make_gta(tmp_path / "gta", n=2)
    dm = build_datamodule(compose_cfg("train", ["data=gta_to_cityscapes", f"paths.data_dir={tmp_path}",
                                                "paths.output_dir=unused"]))  # fmt: skip
    with pytest.raises(FileNotFoundError, match=rf"python scripts/prepare_data.py gta5 {tmp_path / 'gta'}"):
        dm.setup("fit")


def test_skipped_stale_and_corrupt_files(tree, tmp_path):
    root = _copy(tree, tmp_path, "gta")
    man = json.loads((root / "manifest.json").read_text())
    man["splits"]["train"]["skipped"] = [{"name": "00002", "reason": "unreadable image", "message": "x"}]
    (root / "manifest.json").write_text(json.dumps(man))
    ds = GTA5Dataset(root)  # the image the preparation skipped is left out, not an error
    assert [ds.name(i) for i in range(len(ds))] == ["00001", "00003", "00004"]
    with pytest.raises(KeyError, match=rf"labels_trainids/00002.png.*stale.*prepare_data.py gta5 {root}"):
        ds.index_of("labels_trainids/00002.png")
    (root / "images" / "00003.png").write_bytes(b"corrupt")
    with pytest.raises(OSError, match=rf"cannot read image {root / 'images' / '00003.png'}"):
        ds.load(1)
    (root / "labels_trainids" / "00004.png").write_bytes(b"corrupt")
    with pytest.raises(OSError, match=rf"cannot read label {root / 'labels_trainids' / '00004.png'}"):
        ds.load(2)


def test_corrupt_file_in_a_loader_worker_names_the_file(tree, tmp_path):
    shutil.copytree(tree[0] / "cityscapes", tmp_path / "cityscapes")
    root = _copy(tree, tmp_path, "gta")
    for p in (root / "images").iterdir():
        p.write_bytes(b"corrupt")
    cfg = compose_cfg("train", ["data=gta_to_cityscapes", f"paths.data_dir={tmp_path}", "paths.output_dir=x",
                                "data.num_workers=1"])  # fmt: skip
    dm = build_datamodule(cfg)
    dm.setup("fit")  # the start-up checks look at names, not pixels: the corrupt files show up when read
    with pytest.raises(OSError, match=rf"cannot read image {root / 'images'}/0000[1-4].png"):
        next(iter(dm.train_dataloader()))


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    "override", [f"experiment={e}" for e in EXPERIMENTS] + [f"data={d}" for d in DATA_CONFIGS]
)
def test_configs_compose_and_build_the_datamodule(tree, override):
    root, _ = tree
    cfg = compose_cfg("train", [override, f"paths.data_dir={root}", "paths.output_dir=unused",
                                "data.num_workers=0"])  # fmt: skip
    dm = build_datamodule(cfg)
    dm.setup("fit")
    name = cfg.data.name
    src_cls = {"gta": GTA5Dataset, "syn": SynthiaDataset, "cit": CityscapesDataset}[name[:3]]
    assert type(dm.source) is src_cls and dm.source.has_labels
    assert (dm.target is None) == (name == "cityscapes")
    assert dm.val.split == "val" and len(dm.val) == 2
    assert dm.eval_subsets == (["16", "13"] if name.startswith("synthia") else ["19"])
    hr = name.endswith("_hr")
    assert dm.crop_size == ((1024, 1024) if hr else (512, 512))
    scale = {
        "gta_to_cityscapes": (1280, 720),
        "synthia_to_cityscapes": (1280, 760),
        "cityscapes": (1024, 512),
        "gta_to_cityscapes_hr": (2560, 1440),
        "synthia_to_cityscapes_hr": (2560, 1520),
    }[name]
    assert dm.source_transform.scale == scale
    assert dm.val_transform.scale == (None if hr else (1024, 512))
    assert dm.target_pseudo_margins == ((30, 240, 30, 30) if hr else None)
    if override.startswith("experiment="):
        exp = override.split("=")[1]
        assert cfg.model.name == "daformer_mitb5" and cfg.trainer.max_steps == 40000
        assert cfg.uda.name == exp.rsplit("_", 1)[0] and cfg.optim.lr == 6e-5
        rcs = dm.rare_class_sampler()
        assert (rcs is not None) == (not exp.startswith("source_only"))
        if rcs is not None and name.startswith("synthia"):
            assert not set(rcs.classes) & {9, 14, 16}
    # one training item and one validation item through the configured pipelines
    item = dm.train_dataset()[0]
    crop = dm.crop_size
    assert item["source"]["img"].shape == (3, *crop) and item["source"]["gt"].shape == crop
    if dm.target is not None:
        assert item["target"]["img"].shape == (3, *crop) and "gt" not in item["target"]
    v = next(iter(dm.val_dataloader()))
    assert v["gt"].shape == (1, H, W)  # the label stays at full resolution
    assert v["img"].shape[-2:] == ((H, W) if hr else (512, 1024))


# ------------------------------------------------------------------------------------------ protocols
def test_synthia_reports_miou16_and_miou13_from_per_class_iou():
    cfg = compose_cfg("train", ["data=synthia_to_cityscapes", "paths.data_dir=x", "paths.output_dir=x"])
    subsets = resolve_subsets(cfg.data.eval_subsets, 19)
    assert subsets["16"] == tuple(c for c in range(19) if c not in (9, 14, 16))
    assert subsets["13"] == tuple(c for c in subsets["16"] if c not in (3, 4, 5))
    # a confusion matrix with IoU_c = (c + 1) / 20 for the 16 classes, nothing of terrain/truck/train
    cm = torch.zeros(19, 19, dtype=torch.long)
    for c in subsets["16"]:
        cm[c, c] = c + 1
        cm[c, (c + 1) % 19 if (c + 1) % 19 not in (9, 14, 16) else 0] += 20 - (c + 1)
    iou = {}
    for c in range(19):
        union = cm[c].sum() + cm[:, c].sum() - cm[c, c]
        iou[c] = float(cm[c, c] / union) * 100 if union else math.nan
    s = summarize(cm, cfg.data.class_names, subsets)
    m16 = sum(iou[c] for c in subsets["16"]) / 16
    m13 = sum(iou[c] for c in subsets["13"]) / 13
    assert s["subsets"]["16"] == pytest.approx(m16, abs=1e-3)
    assert s["subsets"]["13"] == pytest.approx(m13, abs=1e-3)
    # the x19/16 shortcut of the READMEs is wrong here (terrain, truck, train have no union: NaN, not 0)
    assert abs(s["mIoU"] * 19 / 16 - m16) > 1.0
    gta = compose_cfg("train", ["data=gta_to_cityscapes", "paths.data_dir=x", "paths.output_dir=x"])
    assert list(resolve_subsets(gta.data.eval_subsets, 19)) == ["19"]


# ------------------------------------------------------------------------------------------ training
def test_two_training_steps_on_gta_to_cityscapes(tree, tmp_path):
    """experiment=source_only_gta with rare-class sampling from the prepared statistics, a CPU-sized model,
    the Cityscapes target read each step, and Cityscapes val evaluated at full resolution with the sliding
    window. (The UDA methods themselves are exercised on the synthetic data in tests/test_train.py.)"""
    from src.train import train

    root, _ = tree
    cfg = compose_cfg("train", [
        "experiment=source_only_gta", f"paths.data_dir={root}", f"paths.output_dir={tmp_path / 'run'}",
        "model=daformer_mitb0", *FAST_TRAINER, "trainer.max_steps=2", "trainer.val_check_interval=2",
        "data.crop_size=[32,32]", "data.num_workers=0", "data.source_scale=null", "data.target_scale=null",
        "data.val_scale=null", "uda.rcs.enabled=true", "uda.rcs.min_pixels=50",
        "eval.mode=slide", "eval.crop_size=[32,32]", "eval.stride=[16,16]",
    ])  # fmt: skip
    out = train(cfg)
    assert out["steps"] == 2 and out["data"] == "gta_to_cityscapes" and out["method"] == "source_only"
    assert set(out["subsets"]) == {"19"} and len(out["per_class"]) == 19
    assert out["mIoU"] is not None and 0.0 <= out["mIoU"] <= 100.0
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == out

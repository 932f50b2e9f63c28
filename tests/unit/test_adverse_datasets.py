"""ACDC and Dark Zurich read as downloaded: tiny trees in the exact release layouts (with the releases' decoy
files: labelIds / labelColor / invGray labels, *_ref reference folders), scripts/prepare_data.py acdc |
dark_zurich, the readers, their one-line errors, and the data configs. The tree builders are shared with
tests/test_adverse_train.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from src.data.datasets.acdc import CONDITIONS, ACDCDataset
from src.data.datasets.dark_zurich import DarkZurichDataset
from src.train import build_datamodule
from src.utils.cli import one_line
from tests.conftest import compose_cfg
from tests.unit.test_prepare_data import make_cityscapes, run_script

H, W = 64, 128
SEQS = {"fog": "GOPR0475", "night": "GOPR0351", "rain": "GOPR0400", "snow": "GOPR0122"}


def _label(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    grid = rng.choice([*range(19), 255], size=(-(-h // 16), -(-w // 16))).astype(np.uint8)
    return np.kron(grid, np.ones((16, 16), np.uint8))[:h, :w]


def _write_pair(img_dir: Path, gt_dir: Path | None, stem: str, rng: np.random.Generator) -> np.ndarray | None:
    img_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img_dir / f"{stem}_rgb_anon.png")
    if gt_dir is None:
        return None
    gt_dir.mkdir(parents=True, exist_ok=True)
    lab = _label(rng)
    assert cv2.imwrite(str(gt_dir / f"{stem}_gt_labelTrainIds.png"), lab)
    # the release's other label files (must not be read as train ids)
    assert cv2.imwrite(str(gt_dir / f"{stem}_gt_labelIds.png"), np.full((H, W), 33, np.uint8))
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
        gt_dir / f"{stem}_gt_labelColor.png"
    )
    assert cv2.imwrite(str(gt_dir / f"{stem}_gt_invGray.png"), np.zeros((H, W), np.uint8))
    return lab


def make_acdc(
    root: Path, counts: dict[str, int] | None = None, conditions=CONDITIONS, seed: int = 3
) -> dict[str, dict[str, np.ndarray | None]]:
    """acdc/rgb_anon/<condition>/<split>/<seq>/<seq>_frame_NNNNNN_rgb_anon.png and gt/<condition>/<split>/...
    (test unlabelled; each split with its *_ref decoy); returns {split: {name: train ids or None}}."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray | None]] = {}
    for split, n in (counts or {"train": 2, "val": 1, "test": 1}).items():
        out[split] = {}
        for c in conditions:
            seq = SEQS[c]
            for i in range(n):
                stem = f"{seq}_frame_{i * 7 + 1:06d}"
                gt = None if split == "test" else root / "gt" / c / split / seq
                lab = _write_pair(root / "rgb_anon" / c / split / seq, gt, stem, rng)
                out[split][f"{c}/{seq}/{stem}"] = lab
            _write_pair(
                root / "rgb_anon" / c / f"{split}_ref" / f"{seq}_ref", None, f"{seq}_frame_000009_ref", rng
            )
    return out


def make_dark_zurich(root: Path, counts: dict[str, int] | None = None, seed: int = 4):
    """Dark_Zurich_{train,val,test}_anon/... as the three archives unpack: train day / twilight / night,
    val night with gt, test night; returns {split: {name: train ids or None}}."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 2, "val": 2, "test": 2}
    out: dict[str, dict[str, np.ndarray | None]] = {}
    for split, n in counts.items():
        base = root / f"Dark_Zurich_{split}_anon"
        out[split] = {}
        for t in ("day", "twilight", "night") if split == "train" else ("night",):
            seq = {"day": "GOPR0348", "twilight": "GOPR0349", "night": "GOPR0356"}[t]
            for i in range(n):
                stem = f"{seq}_frame_{i * 3 + 321:06d}"
                gt = base / "gt" / split / t / seq if split == "val" else None
                out[split][f"{t}/{seq}/{stem}"] = _write_pair(
                    base / "rgb_anon" / split / t / seq, gt, stem, rng
                )
        if split != "train":
            _write_pair(
                base / "rgb_anon" / f"{split}_ref" / "day" / "GOPR0355_ref", None, "GOPR0355_frame_1", rng
            )
    return out


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """DATA_ROOT with prepared cityscapes/, acdc/ and dark_zurich/."""
    root = tmp_path_factory.mktemp("adverse")
    make_cityscapes(root / "cityscapes", counts={"train": 4, "val": 1}, h=H, w=W)
    exp = {"acdc": make_acdc(root / "acdc"), "dark_zurich": make_dark_zurich(root / "dark_zurich")}
    for dataset, sub in (("cityscapes", "cityscapes"), ("acdc", "acdc"), ("dark_zurich", "dark_zurich")):
        assert run_script(dataset, root / sub, "--workers", "1") == 0
    return root, exp


# ------------------------------------------------------------------------------------------ prepare
def test_prepare_acdc_checks_every_pair_and_writes_manifest_and_stats(trees, capsys):
    root, exp = trees
    man = json.loads((root / "acdc" / "manifest.json").read_text())
    assert man["dataset"] == "acdc" and set(man["splits"]) == {"train", "val", "test"}
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        s = man["splits"][split]
        assert s["groups"] == list(CONDITIONS) and s["images"] == s["prepared"] == n and not s["skipped"]
        assert s["labelled"] == (split != "test") and not s["orphan_labels"]
    # statistics of the labelled train split, counted on the released train ids (RCS reads them for ACDC as a
    # source; Cityscapes -> ACDC samples the Cityscapes source, whose statistics prepare cityscapes writes)
    stats = json.loads((root / "acdc" / "sample_class_stats.json").read_text())
    assert len(stats) == 8
    first = stats[0]
    lab = cv2.imread(str(root / "acdc" / first["file"]), cv2.IMREAD_UNCHANGED)
    assert first["file"].startswith("gt/fog/train/GOPR0475/") and first["file"].endswith(
        "_gt_labelTrainIds.png"
    )
    hist = np.bincount(lab.ravel(), minlength=256)
    assert first["counts"] == {str(c): int(hist[c]) for c in range(19) if hist[c]}
    assert (root / "cityscapes" / "sample_class_stats.json").is_file()
    # nothing was written next to the release's labels
    assert not list((root / "acdc" / "gt").rglob("*.tmp"))


def test_prepare_dark_zurich_finds_the_archives_and_their_times(trees):
    root, _ = trees
    man = json.loads((root / "dark_zurich" / "manifest.json").read_text())
    assert man["splits"]["train"]["groups"] == ["day", "twilight", "night"]  # the time folders present
    assert man["splits"]["val"]["labelled"] and not man["splits"]["test"]["labelled"]
    assert [man["splits"][s]["prepared"] for s in ("train", "val", "test")] == [6, 2, 2]
    assert "stats" not in man and not (root / "dark_zurich" / "sample_class_stats.json").exists()


def test_prepare_reports_an_image_without_its_label_and_a_bad_label(tmp_path, capsys):
    root = tmp_path / "acdc"
    make_acdc(root, counts={"train": 2, "val": 1}, conditions=("fog",))
    lab = next((root / "gt" / "fog" / "train").rglob("*_gt_labelTrainIds.png"))
    lab.unlink()
    bad = next((root / "gt" / "fog" / "val").rglob("*_gt_labelTrainIds.png"))
    assert cv2.imwrite(str(bad), np.full((H, W), 33, np.uint8))  # label ids, not train ids
    assert run_script("acdc", root, "--conditions", "fog", "--splits", "train", "val", "--workers", "1") == 0
    out = capsys.readouterr().out
    img = (
        root
        / "rgb_anon"
        / "fog"
        / "train"
        / lab.parent.name
        / lab.name.replace("_gt_labelTrainIds", "_rgb_anon")
    )
    assert f"no label: image {img} has no label {lab}" in out
    assert f"bad label: label {bad} holds ids [33] outside the train ids 0..18 and 255" in out
    man = json.loads((root / "manifest.json").read_text())
    assert man["splits"]["train"]["prepared"] == 1 and man["splits"]["val"]["prepared"] == 0
    ds = ACDCDataset(root, split="train", conditions="fog")  # the skipped pair is left out
    assert len(ds) == 1


def test_prepare_errors_name_the_path(tmp_path, capsys):
    assert run_script("acdc", tmp_path / "nowhere") == 1
    assert f"error: {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    root = tmp_path / "acdc"
    make_acdc(root, counts={"train": 1}, conditions=("fog", "night", "rain"))  # no snow folder
    assert run_script("acdc", root, "--splits", "train") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"no folder {root / 'rgb_anon' / 'snow' / 'train'}" in err
    assert "the snow train split of rgb_anon_trainvaltest.zip" in err and "--conditions" in err
    assert run_script("acdc", root, "--splits", "train", "--conditions", "fog", "night", "rain") == 0


# ------------------------------------------------------------------------------------------ readers
def test_acdc_reader_conditions_splits_and_labels(trees):
    root, exp = trees
    val = ACDCDataset(root / "acdc", split="val")
    assert [val.name(i) for i in range(len(val))] == sorted(exp["acdc"]["val"])
    for i in range(len(val)):
        img, lab = val.load(i)
        assert img.shape == (H, W, 3) and (lab == exp["acdc"]["val"][val.name(i)]).all()
    night = ACDCDataset(root / "acdc", split="train", conditions=["night"], labels=False)
    assert len(night) == 2 and all(night.name(i).startswith("night/GOPR0351/") for i in range(2))
    assert night.load(0)[1] is None
    test = ACDCDataset(root / "acdc", split="test")  # unlabelled; the *_ref folders are not read
    assert len(test) == 4 and not test.has_labels
    with pytest.raises(ValueError, match=r"conditions=\['haze'\] must name one or more of fog, night"):
        ACDCDataset(root / "acdc", conditions=["haze"])


def test_dark_zurich_reader_night_target_and_labelled_val(trees, tmp_path):
    root, exp = trees
    target = DarkZurichDataset(root / "dark_zurich", split="train")  # MIC's target: night only
    assert [target.name(i) for i in range(len(target))] == sorted(k for k in exp["dark_zurich"]["train"]
                                                                  if k.startswith("night/"))  # fmt: skip
    assert not target.has_labels
    val = DarkZurichDataset(root / "dark_zurich", split="val")
    assert len(val) == 2 and (val.load(1)[1] == exp["dark_zurich"]["val"][val.name(1)]).all()
    both = DarkZurichDataset(root / "dark_zurich", split="train", times=["twilight", "night"])
    assert len(both) == 4
    with pytest.raises(ValueError, match="has no released labels"):
        DarkZurichDataset(root / "dark_zurich", split="train", labels=True)
    # MIC's layout: the archives unpacked into one folder (rgb_anon/{train,val}, gt/val)
    merged = tmp_path / "dz"
    for part in ("Dark_Zurich_train_anon", "Dark_Zurich_val_anon"):
        shutil.copytree(root / "dark_zurich" / part, merged, dirs_exist_ok=True)
    assert run_script("dark_zurich", merged, "--workers", "1") == 0
    assert len(DarkZurichDataset(merged, split="val")) == 2


def test_errors_are_one_line_naming_the_path_and_the_command(trees, tmp_path):
    root, _ = trees
    cmd = f"`python scripts/prepare_data.py acdc {tmp_path / 'acdc'}`"
    with pytest.raises(FileNotFoundError) as e:  # wrong root
        ACDCDataset(tmp_path / "acdc")
    assert f"ACDC root {tmp_path / 'acdc'} does not exist" in str(e.value) and cmd in str(e.value)
    make_acdc(tmp_path / "acdc", counts={"train": 1, "val": 1}, conditions=("fog", "night"))
    with pytest.raises(FileNotFoundError) as e:  # a missing condition folder
        ACDCDataset(tmp_path / "acdc", split="val")
    msg = one_line(e.value)
    assert f"no folder {tmp_path / 'acdc' / 'rgb_anon' / 'rain' / 'val'}" in msg and cmd in msg
    with pytest.raises(FileNotFoundError) as e:  # not prepared
        ACDCDataset(tmp_path / "acdc", split="val", conditions=["fog", "night"])
    assert f"{tmp_path / 'acdc' / 'manifest.json'} does not exist" in str(e.value) and cmd in str(e.value)
    assert run_script("acdc", tmp_path / "acdc", "--conditions", "fog", "--splits", "train", "val") == 0
    with pytest.raises(
        FileNotFoundError, match=r"manifest.json does not cover the val split of night \(prepared: fog"
    ):
        ACDCDataset(tmp_path / "acdc", split="val", conditions=["fog", "night"])
    assert (
        run_script("acdc", tmp_path / "acdc", "--conditions", "fog", "night", "--splits", "train", "val") == 0
    )
    lab = next((tmp_path / "acdc" / "gt" / "night" / "val").rglob("*_gt_labelTrainIds.png"))
    lab.unlink()  # an image whose label went missing after the preparation
    with pytest.raises(FileNotFoundError) as e:
        ACDCDataset(tmp_path / "acdc", split="val", conditions=["fog", "night"])
    msg = one_line(e.value)
    assert "\n" not in str(e.value) and f"has no label {lab}" in msg and "gt_trainval.zip" in msg
    with pytest.raises(FileNotFoundError) as e:
        DarkZurichDataset(tmp_path / "dz", split="val")
    assert "Dark Zurich root" in str(e.value) and "prepare_data.py dark_zurich" in str(e.value)


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("data", ["cityscapes_to_acdc", "cityscapes_to_acdc_hr", "cityscapes_to_darkzurich",
                                  "cityscapes_to_darkzurich_hr"])  # fmt: skip
def test_data_configs_build_the_datamodule(trees, data):
    """MIC's numbers (configs/_base_/datasets/uda_cityscapes{HR}_to_{acdc,darkzurich}{HR}_*.py, experiments.py
    exp 80): Cityscapes source at 1024x512 / 2048x1024, target at 960x540 / 1920x1080, crops 512 / 1024, no
    pseudo-label margins on these targets."""
    root, _ = trees
    cfg = compose_cfg("train", [f"data={data}", f"paths.data_dir={root}", "paths.output_dir=x",
                                "data.num_workers=0"])  # fmt: skip
    dm = build_datamodule(cfg)
    dm.setup("fit")
    hr = data.endswith("_hr")
    acdc = "acdc" in data
    assert (
        dm.source.split == "train"
        and dm.source.has_labels
        and type(dm.source).__name__ == "CityscapesDataset"
    )
    assert type(dm.target) is (ACDCDataset if acdc else DarkZurichDataset) and not dm.target.has_labels
    assert dm.val.split == "val" and dm.val.has_labels and len(dm.val) == (4 if acdc else 2)
    assert len(dm.target) == (8 if acdc else 2)  # Dark Zurich: the night train images only
    assert dm.crop_size == ((1024, 1024) if hr else (512, 512)) and dm.batch_size == 2
    assert dm.source_transform.scale == ((2048, 1024) if hr else (1024, 512))
    assert dm.target_transform.scale == ((1920, 1080) if hr else (960, 540))
    assert dm.val_transform.scale == (None if hr else (960, 540))
    assert dm.target_pseudo_margins is None and list(cfg.data.pseudo_label_rows) == [0, 0]
    assert dm.eval_subsets == ["19"] and dm.rare_class_sampler() is None  # rcs is the method's (uda.rcs)
    item = dm.train_dataset()[0]
    assert item["source"]["img"].shape == (3, *dm.crop_size) and item["target"]["img"].shape == (
        3,
        *dm.crop_size,
    )
    v = next(iter(dm.val_dataloader()))
    assert v["gt"].shape == (1, H, W)

"""Folder dataset format, clear errors, transforms."""

import numpy as np
import pytest
from PIL import Image

from src.data.datasets.folder import FolderDataset
from src.data.transforms import MEAN, STD, EvalTransform, TrainTransform, rescale_size


def _write(root, stems, h=32, w=48, label=True, label_shape=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in stems:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{s}.png")
        if label:
            lh, lw = label_shape or (h, w)
            Image.fromarray(rng.integers(0, 19, (lh, lw), dtype=np.uint8)).save(root / "labels" / f"{s}.png")


def test_pairs_by_stem_and_loads(tmp_path):
    _write(tmp_path, ["b", "a"])
    ds = FolderDataset(tmp_path)
    assert len(ds) == 2 and ds.name(0) == "a"
    img, lab = ds.load(1)
    assert img.shape == (32, 48, 3) and img.dtype == np.uint8 and lab.shape == (32, 48)
    assert ds.label_key(0) == "labels/a.png" and ds.index_of("labels/b.png") == 1


def test_missing_folder_names_key_and_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.source_dir=.*images"):
        FolderDataset(tmp_path / "nope", key="data.source_dir")


def test_unpaired_files_are_reported(tmp_path):
    _write(tmp_path, ["a", "b"])
    (tmp_path / "labels" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) without label.*b.png"):
        FolderDataset(tmp_path)


def test_size_mismatch_and_corrupt_file_name_the_file(tmp_path):
    _write(tmp_path, ["a"], label_shape=(30, 48))
    with pytest.raises(ValueError, match="labels/a.png"):
        FolderDataset(tmp_path).load(0)
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="images/a.png"):
        FolderDataset(tmp_path).load(0)


def test_unlabelled_target(tmp_path):
    _write(tmp_path, ["a"], label=False)
    ds = FolderDataset(tmp_path, labels=False)
    assert ds.load(0)[1] is None


def test_rescale_size_matches_mmseg_keep_ratio():
    assert rescale_size(1914, 1052, (1280, 720)) == (1280, 704)
    assert rescale_size(2048, 1024, (1024, 512)) == (1024, 512)


def test_train_transform_crop_flip_normalise():
    rng = np.random.default_rng(0)
    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 0] = 255
    lab = np.tile(np.arange(60, dtype=np.uint8) % 19, (40, 1))
    out = TrainTransform(crop_size=(16, 16), cat_max_ratio=0.75)(img, lab, rng)
    assert out["img"].shape == (3, 16, 16) and out["gt"].shape == (16, 16)
    assert out["img"][0, 0, 0].item() == pytest.approx((255 - MEAN[0]) / STD[0])
    # the label crop is a contiguous run of columns (possibly flipped)
    row = out["gt"][0].numpy()
    d = np.diff(row.astype(int)) % 19
    assert (d == 1).all() or (d == 18).all()
    assert out["valid"].sum() == 16 * 16


def test_small_images_are_padded_with_ignore():
    out = TrainTransform(crop_size=(16, 16))(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8),
                                             np.random.default_rng(0), )  # fmt: skip
    assert (out["gt"] == 255).sum() == 16 * 16 - 64


def test_rcs_crop_retries_until_class_present():
    lab = np.zeros((64, 64), np.uint8)
    lab[:8, :8] = 7  # the rare class sits in one corner
    img = np.zeros((64, 64, 3), np.uint8)
    t = TrainTransform(crop_size=(16, 16), flip_p=0.0, max_tries=10)
    hits = sum((t(img, lab, np.random.default_rng(s), rcs_class=7, rcs_min_pixels=0)["gt"] == 7).any().item()
               for s in range(40))  # fmt: skip
    # one random 16x16 crop holds class 7 with p ~ 0.05; ten retries push that far up
    assert hits >= 10


def test_eval_transform_keeps_full_label():
    out = EvalTransform(scale=(32, 16))(np.zeros((32, 64, 3), np.uint8), np.zeros((32, 64), np.uint8))
    assert out["img"].shape == (3, 16, 32) and out["gt"].shape == (32, 64)

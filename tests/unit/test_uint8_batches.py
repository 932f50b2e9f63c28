"""uint8 batches (src/data/transforms.py): the workers stop at the crop, the data module normalises on the
device; the network input is bit-identical to the float pipeline's, with the same crops, flips and masks.
Also the faster cat-max-ratio check (a histogram instead of np.unique) takes the same decisions."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from src.data.datamodule import UDADataModule
from src.data.transforms import (
    EvalTransform,
    TrainTransform,
    _cat_ratio_ok,
    collate,
    normalize_batch,
    normalize_uint8,
    to_tensor,
)


def _scene(h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    lab = rng.integers(0, 19, (h, w), dtype=np.uint8)
    lab[: h // 4] = 255
    return img, lab


@pytest.mark.parametrize(
    "kw, size",
    [
        ({"crop_size": (16, 24), "cat_max_ratio": 0.75}, (40, 60)),  # crop + cat-max-ratio retries
        ({"crop_size": (32, 32), "scale": (48, 24)}, (50, 100)),  # keep-ratio resize first
        ({"crop_size": (32, 48)}, (20, 30)),  # smaller than the crop: padded
    ],
)
def test_uint8_output_normalises_to_the_float_pipeline_bit_for_bit(kw, size):
    img, lab = _scene(*size)
    for seed in range(12):  # both flip outcomes, several crops
        for valid in (None, (np.arange(size[0])[:, None] > 3).repeat(size[1], 1).astype(np.uint8)):
            a = TrainTransform(**kw)(img, lab, np.random.default_rng(seed), valid=valid)
            b = TrainTransform(**kw, uint8=True)(img, lab, np.random.default_rng(seed), valid=valid)
            assert (
                b["img"].dtype == torch.uint8
                and b["gt"].dtype == torch.uint8
                and a["gt"].dtype == torch.int64
            )
            assert torch.equal(normalize_uint8(b["img"]), a["img"])  # same arithmetic as to_tensor
            assert torch.equal(b["gt"].long(), a["gt"]) and torch.equal(a["valid"], b["valid"])
            # and the unlabelled (target) path
            t = TrainTransform(**kw, uint8=True)(img, None, np.random.default_rng(seed), valid=valid)
            assert "gt" not in t and torch.equal(t["img"], b["img"]) and torch.equal(t["valid"], b["valid"])


def test_missing_valid_mask_is_one_on_the_image_and_zero_on_the_padding():
    img, lab = _scene(20, 30)
    for seed in range(6):
        ref = TrainTransform(crop_size=(32, 48))(img, lab, np.random.default_rng(seed),
                                                 valid=np.ones((20, 30), np.uint8))  # fmt: skip
        out = TrainTransform(crop_size=(32, 48))(img, lab, np.random.default_rng(seed))
        assert torch.equal(out["valid"], ref["valid"]) and int(out["valid"].sum()) == 20 * 30


def test_flip_mirrors_image_label_and_mask_together():
    img, lab = _scene(16, 16)
    t = TrainTransform(crop_size=(16, 16), flip_p=1.0, uint8=True)
    out = t(img, lab, np.random.default_rng(0), valid=np.tri(16, dtype=np.uint8))
    assert torch.equal(out["img"], torch.from_numpy(img[:, ::-1].copy()).permute(2, 0, 1))
    assert torch.equal(out["gt"], torch.from_numpy(lab[:, ::-1].copy()))
    assert torch.equal(out["valid"], torch.from_numpy(np.tri(16, dtype=np.uint8)[:, ::-1].copy()))


def test_eval_transform_uint8_matches_float():
    img, lab = _scene(32, 64)
    for scale in (None, (32, 16)):
        a, b = EvalTransform(scale=scale)(img, lab), EvalTransform(scale=scale, uint8=True)(img, lab)
        assert torch.equal(normalize_uint8(b["img"]), a["img"]) and torch.equal(b["gt"].long(), a["gt"])


def test_normalize_batch_converts_uint8_images_and_labels_only():
    img, lab = _scene(16, 16)
    t = TrainTransform(crop_size=(8, 8), uint8=True)
    rngs = [np.random.default_rng(s) for s in range(2)]
    items = [
        {"source": t(img, lab, r), "target": t(img, None, r), "name": f"n{s}"} for s, r in enumerate(rngs)
    ]
    batch = default_collate(items)
    out = normalize_batch(batch)
    assert out["source"]["img"].dtype == torch.float32 and out["source"]["gt"].dtype == torch.int64
    assert out["source"]["valid"].dtype == torch.uint8 and out["name"] == ["n0", "n1"]
    expected = torch.stack([to_tensor(np.asarray(i["source"]["img"].permute(1, 2, 0))) for i in items])
    assert torch.equal(out["source"]["img"], expected)
    assert torch.equal(normalize_batch(out)["source"]["img"], out["source"]["img"])  # float input: unchanged
    assert normalize_batch(batch, torch.bfloat16)["target"]["img"].dtype == torch.bfloat16
    # lists, tuples, named tuples and "img_*" / "gt_*" keys (e.g. the previous frame of a video item)
    Pair = namedtuple("Pair", "a b")
    nested = normalize_batch(
        {"clip": [{"img_prev": batch["source"]["img"]}], "t": Pair(1, {"gt_prev": batch["source"]["gt"]})}
    )
    assert nested["clip"][0]["img_prev"].dtype == torch.float32
    assert isinstance(nested["t"], Pair) and nested["t"].b["gt_prev"].dtype == torch.int64


def test_data_module_ships_uint8_and_normalises_after_the_transfer():
    dm = UDADataModule(source=lambda: None, target=None, val=lambda: None, crop_size=8)
    assert dm.source_transform.uint8 and dm.target_transform.uint8 and dm.val_transform.uint8
    img, lab = _scene(16, 16)
    batch = default_collate([{"img": dm.val_transform(img, lab)["img"], "gt": torch.from_numpy(lab)}])
    out = dm.on_after_batch_transfer(batch, 0)  # no trainer attached: float32
    assert torch.equal(out["img"], to_tensor(img)[None]) and out["gt"].dtype == torch.int64


def test_cat_max_ratio_histogram_decides_like_np_unique():
    def reference(crop, ratio, ignore):  # mmseg RandomCrop: np.unique counts without the ignore index
        values, counts = np.unique(crop, return_counts=True)
        counts = counts[values != ignore]
        return len(counts) > 1 and counts.max() / counts.sum() < ratio

    rng = np.random.default_rng(0)
    decisions = set()
    for _ in range(2000):
        h, w = rng.integers(1, 24, 2)
        classes = np.array([0, 1, 2, 13, 255, 18], np.uint8)[: rng.integers(1, 7)]
        crop = rng.choice(classes, size=(h, w), p=None)
        ratio = float(rng.choice([0.3, 0.5, 0.75, 0.95]))
        got = _cat_ratio_ok(crop, ratio, 255)
        assert got == reference(crop, ratio, 255) == _cat_ratio_ok(crop.astype(np.int64), ratio, 255)
        decisions.add(got)
    assert decisions == {True, False}


def test_collate_stacks_uint8_images_as_pixels_and_the_device_makes_them_contiguous():
    img, lab = _scene(24, 40)
    t = TrainTransform(crop_size=(16, 16), uint8=True)
    items = [{"img": t(img, lab, np.random.default_rng(s))["img"], "gt": torch.tensor(s), "name": f"n{s}"}
             for s in range(3)]  # fmt: skip
    ours, ref = collate(items), default_collate(items)
    assert ours["img"].shape == ref["img"].shape == (3, 3, 16, 16) and torch.equal(ours["img"], ref["img"])
    assert ours["img"].is_contiguous(memory_format=torch.channels_last)  # a view of N x H x W x 3 pixels
    assert ours["name"] == ref["name"] and torch.equal(ours["gt"], ref["gt"])
    x = normalize_uint8(ours["img"])
    assert x.is_contiguous() and torch.equal(x, normalize_uint8(ref["img"]))
    # tensors of any other layout: the default collation
    other = [torch.arange(6, dtype=torch.uint8).view(3, 1, 2) for _ in range(2)]
    assert torch.equal(collate(other), default_collate(other)) and collate(other).is_contiguous()


def test_collate_in_data_loader_workers_matches_the_default():
    img, lab = _scene(24, 40)
    t = TrainTransform(crop_size=(16, 16), uint8=True)

    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> dict:
            return t(img, lab, np.random.default_rng(i))

    fast = torch.utils.data.DataLoader(Items(), batch_size=3, num_workers=1, collate_fn=collate,
                                       multiprocessing_context="fork")  # fmt: skip
    for a, b in zip(fast, torch.utils.data.DataLoader(Items(), batch_size=3), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in b)

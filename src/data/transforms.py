"""Joint image/label transforms (albumentations for resize and photometric ops, numpy for crops).

Values follow the DAFormer data pipelines (reference/daformer_mic.md §5):
- `Resize(img_scale, keep_ratio=True)` of mmseg: the image is scaled by
  min(long_max / long_edge, short_max / short_edge), e.g. GTA 1914x1052 -> 1280x704 for (1280, 720).
- `RandomCrop(crop_size, cat_max_ratio=0.75)`: up to 10 tries to find a crop in which no single
  class covers more than 75 % of the non-ignored pixels (source only).
- Rare-class sampling (DAFormer RCS, §1.7) additionally retries the crop up to 10 times until it holds
  more than `min_crop_pixels` pixels of the sampled class.
- horizontal flip p = 0.5, ImageNet normalisation, no photometric distortion (the strong augmentation
  happens on the GPU in the UDA step).

uint8 batches (our design, README "Performance"): with ``uint8=True`` (what the UDA data module uses) the
transforms stop at the crop: the image leaves the worker as a uint8 3xHxW tensor and the label as uint8,
a quarter (an eighth) of the float32 (int64) bytes through the worker queue, pinned memory and the
host-to-device copy. :func:`normalize_batch` (the data module's ``on_after_batch_transfer``) turns them
into the ImageNet-normalised float input and int64 labels on the device, with the same arithmetic as
:func:`to_tensor`, so both paths give bit-identical network inputs. In a worker the float conversion and
normalisation were 19 % of an item (scripts/benchmark.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data._utils.collate import collate as _torch_collate
from torch.utils.data._utils.collate import collate_tensor_fn, default_collate_fn_map

from src.data.classes import IGNORE_INDEX

# ImageNet mean / std on the 0..255 RGB scale (mmseg `img_norm_cfg`, daformer_mic.md §5).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmseg keep-ratio rescale: returns the new (width, height) for `img_scale=scale`."""
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(width, height), short_max / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


_MEAN_T = torch.tensor(MEAN).view(3, 1, 1)
_STD_T = torch.tensor(STD).view(3, 1, 1)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 3xHxW float32, normalised with the ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    return (x - _MEAN_T) / _STD_T


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing `a`'s memory (e.g. a crop view): the batch collation makes the one copy into the
    batch. Copied first only when a stride is negative, which torch cannot share."""
    return torch.from_numpy(a if min(a.strides) >= 0 else np.ascontiguousarray(a))


def to_uint8_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB (any view, e.g. a crop) -> 3xHxW uint8 view, no copy; the batch collation copies
    it into the batch, :func:`normalize_batch` normalises it on the device."""
    return _as_tensor(image).permute(2, 0, 1)


_NORM_CACHE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # mean, std per device


def normalize_uint8(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (..., 3, H, W), any strides -> contiguous ImageNet-normalised float on x's device:
    ``(x - mean) / std`` in float32 (the arithmetic of :func:`to_tensor`, bit for bit), then cast to
    `dtype`. The conversion also makes the channels-last batches of :func:`collate` contiguous NCHW."""
    if x.device not in _NORM_CACHE:
        _NORM_CACHE[x.device] = (_MEAN_T.to(x.device), _STD_T.to(x.device))
    mean, std = _NORM_CACHE[x.device]
    out = (x.to(torch.float32, memory_format=torch.contiguous_format) - mean) / std
    return out if dtype == torch.float32 else out.to(dtype)


def _collate_tensor(batch: list[torch.Tensor], *, collate_fn_map: dict | None = None) -> torch.Tensor:
    elem = batch[0]
    if (
        elem.dtype == torch.uint8
        and elem.dim() == 3
        and elem.shape[0] == 3
        and all(x.stride(0) == 1 for x in batch)
    ):
        # 3xHxW views of HxWx3 crops: stack the pixels (a plain copy) and view the batch as NCHW; torch's
        # channel transposition of uint8 is 9x slower, and on the device it comes free with the float cast
        return collate_tensor_fn([x.permute(1, 2, 0) for x in batch]).permute(0, 3, 1, 2)
    return collate_tensor_fn(batch)


_COLLATE_MAP = {**default_collate_fn_map, torch.Tensor: _collate_tensor}


def collate(batch: list) -> Any:
    """The data loaders' `collate_fn`: torch's default collation, except that uint8 images made by
    :func:`to_uint8_tensor` (3xHxW views of HxWx3 crops) are stacked as NxHxWx3 pixels and returned as an
    N x 3 x H x W view of them (channels-last strides; in a worker straight into shared memory, as the
    default). :func:`normalize_uint8` on the device returns contiguous NCHW float; values are unchanged."""
    elem = batch[0]
    if type(elem) is dict:  # the common case, without torch's generic type dispatch
        return {k: collate([b[k] for b in batch]) for k in elem}
    if type(elem) is torch.Tensor:
        return _collate_tensor(batch)
    return _torch_collate(batch, collate_fn_map=_COLLATE_MAP)


def normalize_batch(batch: Any, dtype: torch.dtype = torch.float32, *, _key: str = "") -> Any:
    """Device side of the uint8 pipeline, applied to a whole (nested) batch of dicts / lists / tuples.

    A uint8 tensor under a key starting with ``img`` (``img``, ``img_prev``, ...) becomes the normalised
    float input (:func:`normalize_uint8`), a uint8 tensor under a key starting with ``gt`` an int64 label
    map; everything else (float images of other pipelines, ``valid`` masks, names) passes unchanged, so
    calling it on an already normalised batch is a no-op.
    """
    if isinstance(batch, dict):
        return {k: normalize_batch(v, dtype, _key=str(k)) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        out = [normalize_batch(v, dtype, _key=_key) for v in batch]
        if isinstance(batch, list):
            return out
        return type(batch)(*out) if hasattr(batch, "_fields") else tuple(out)  # a named tuple keeps its type
    if isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8:
        if _key.startswith("img"):
            return normalize_uint8(batch, dtype)
        if _key.startswith("gt"):
            return batch.long()
    return batch


def _resize(image: np.ndarray, masks: list[np.ndarray], size_wh: tuple[int, int]):
    w, h = size_wh
    if image.shape[1] == w and image.shape[0] == h:
        return image, masks
    out = A.Resize(height=h, width=w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                   p=1.0)(image=image, masks=masks)  # fmt: skip
    return out["image"], list(out["masks"])


def _pad_to(image: np.ndarray, masks: list[np.ndarray], crop_hw: tuple[int, int], pad_values: list[int]):
    """Pad at bottom/right to at least the crop size (mmseg Pad: image 0, label 255)."""
    ch, cw = crop_hw
    h, w = image.shape[:2]
    if h >= ch and w >= cw:
        return image, masks
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
    masks = [np.pad(m, ((0, ph), (0, pw)), constant_values=v) for m, v in zip(masks, pad_values)]
    return image, masks


def _cat_ratio_ok(label_crop: np.ndarray, cat_max_ratio: float, ignore_index: int) -> bool:
    """mmseg cat_max_ratio: more than one class, none above `cat_max_ratio` of the non-ignored pixels."""
    if label_crop.dtype == np.uint8:  # a histogram: 15x faster than np.unique's sort, the same counts
        counts = np.bincount(label_crop.ravel(), minlength=256)
        if 0 <= ignore_index < 256:
            counts[ignore_index] = 0
        counts = counts[counts > 0]
    else:
        values, counts = np.unique(label_crop, return_counts=True)
        counts = counts[values != ignore_index]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


@dataclass
class TrainTransform:
    """Resize (keep ratio) -> random crop (cat-max-ratio / rare-class retries) -> flip -> normalise.

    `scale` is the mmseg `img_scale` (long, short) or None to keep the stored resolution. `uint8=True`
    stops before the normalisation: `img` is a uint8 3xHxW tensor and `gt` a uint8 map (the module
    normalises on the device, :func:`normalize_batch`); the crop, flip and random draws are the same.
    """

    crop_size: tuple[int, int] = (512, 512)  # (height, width)
    scale: tuple[int, int] | None = None
    cat_max_ratio: float = 1.0
    flip_p: float = 0.5
    max_tries: int = 10
    ignore_index: int = IGNORE_INDEX
    uint8: bool = False

    def __call__(
        self,
        image: np.ndarray,
        label: np.ndarray | None,
        rng: np.random.Generator,
        *,
        valid: np.ndarray | None = None,
        rcs_class: int | None = None,
        rcs_min_pixels: float = 0.0,
        diag_label: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """``diag_label``: a label for diagnostics only (the target's, ``data.target_diagnostic_labels``),
        cropped, resized and flipped with the image as ``diag_gt`` but never used to choose the crop, so the
        stream of images is the same with and without it."""
        h, w = image.shape[:2]
        masks, pads = [], []
        if label is not None:
            masks.append(label)
            pads.append(self.ignore_index)
        if valid is not None:
            masks.append(valid)
            pads.append(0)
        if diag_label is not None:
            masks.insert(0, diag_label)
            pads.insert(0, self.ignore_index)
        if self.scale is not None:
            image, masks = _resize(image, masks, rescale_size(w, h, tuple(self.scale)))
        rh, rw = image.shape[:2]  # the image before padding: where a missing `valid` mask is 1
        image, masks = _pad_to(image, masks, tuple(self.crop_size), pads)
        li = 1 if diag_label is not None else 0  # the training label's index in `masks`
        box = self._choose_box(image.shape[:2], masks[li] if label is not None else None, rng,
                               rcs_class, rcs_min_pixels)  # fmt: skip
        y0, x0, ch, cw = box
        image = image[y0 : y0 + ch, x0 : x0 + cw]
        masks = [m[y0 : y0 + ch, x0 : x0 + cw] for m in masks]
        if valid is None:  # all pixels of the image are valid, the padding is not (no full-size mask built)
            v = np.zeros((ch, cw), np.uint8)
            v[: max(min(rh - y0, ch), 0), : max(min(rw - x0, cw), 0)] = 1
            masks.append(v)
        if rng.random() < self.flip_p:  # cv2.flip: ~30x faster than copying a [:, ::-1] view of HxWx3
            image = cv2.flip(image, 1)
            masks = [cv2.flip(m, 1) for m in masks]
        out = {
            "img": to_uint8_tensor(image) if self.uint8 else to_tensor(image),
            "valid": _as_tensor(masks[-1]),
        }
        if label is not None:
            out["gt"] = _as_tensor(masks[li]) if self.uint8 else torch.from_numpy(masks[li].astype(np.int64))
        if diag_label is not None:
            out["diag_gt"] = (
                _as_tensor(masks[0]) if self.uint8 else torch.from_numpy(masks[0].astype(np.int64))
            )
        return out

    def _choose_box(self, hw, label, rng, rcs_class, rcs_min_pixels):
        h, w = hw
        ch, cw = self.crop_size
        box = (0, 0, ch, cw)
        for _ in range(self.max_tries):
            box = (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
            if label is None:
                return box
            crop = label[box[0] : box[0] + ch, box[1] : box[1] + cw]
            if rcs_class is not None:
                # DAFormer RCS: retry until the crop holds enough pixels of the sampled class.
                if np.count_nonzero(crop == rcs_class) > rcs_min_pixels:
                    return box
                continue
            if self.cat_max_ratio >= 1.0 or _cat_ratio_ok(crop, self.cat_max_ratio, self.ignore_index):
                return box
        return box


@dataclass
class EvalTransform:
    """Test pipeline: optional keep-ratio resize of the image only; the label stays at full size
    (logits are upsampled to the label, daformer_mic.md §5 Evaluation). `uint8=True`: uint8 `img` and
    `gt` (normalised on the device, :func:`normalize_batch`)."""

    scale: tuple[int, int] | None = None
    uint8: bool = False

    def __call__(self, image: np.ndarray, label: np.ndarray | None) -> dict[str, torch.Tensor]:
        h, w = image.shape[:2]
        if self.scale is not None:
            image, _ = _resize(image, [], rescale_size(w, h, tuple(self.scale)))
        out = {"img": to_uint8_tensor(image) if self.uint8 else to_tensor(image)}
        if label is not None:
            out["gt"] = _as_tensor(label) if self.uint8 else torch.from_numpy(label.astype(np.int64))
        return out

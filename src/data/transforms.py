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
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch

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
    values, counts = np.unique(label_crop, return_counts=True)
    counts = counts[values != ignore_index]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


@dataclass
class TrainTransform:
    """Resize (keep ratio) -> random crop (cat-max-ratio / rare-class retries) -> flip -> normalise.

    `scale` is the mmseg `img_scale` (long, short) or None to keep the stored resolution.
    """

    crop_size: tuple[int, int] = (512, 512)  # (height, width)
    scale: tuple[int, int] | None = None
    cat_max_ratio: float = 1.0
    flip_p: float = 0.5
    max_tries: int = 10
    ignore_index: int = IGNORE_INDEX

    def __call__(
        self,
        image: np.ndarray,
        label: np.ndarray | None,
        rng: np.random.Generator,
        *,
        valid: np.ndarray | None = None,
        rcs_class: int | None = None,
        rcs_min_pixels: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        h, w = image.shape[:2]
        masks, pads = [], []
        if label is not None:
            masks.append(label)
            pads.append(self.ignore_index)
        if valid is None:
            valid = np.ones((h, w), np.uint8)
        masks.append(valid)
        pads.append(0)
        if self.scale is not None:
            image, masks = _resize(image, masks, rescale_size(w, h, tuple(self.scale)))
        image, masks = _pad_to(image, masks, tuple(self.crop_size), pads)
        box = self._choose_box(image.shape[:2], masks[0] if label is not None else None, rng,
                               rcs_class, rcs_min_pixels)  # fmt: skip
        y0, x0, ch, cw = box
        image = image[y0 : y0 + ch, x0 : x0 + cw]
        masks = [m[y0 : y0 + ch, x0 : x0 + cw] for m in masks]
        if rng.random() < self.flip_p:
            image = image[:, ::-1]
            masks = [m[:, ::-1] for m in masks]
        out = {"img": to_tensor(image), "valid": torch.from_numpy(np.ascontiguousarray(masks[-1]))}
        if label is not None:
            out["gt"] = torch.from_numpy(np.ascontiguousarray(masks[0]).astype(np.int64))
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
                if (crop == rcs_class).sum() > rcs_min_pixels:
                    return box
                continue
            if self.cat_max_ratio >= 1.0 or _cat_ratio_ok(crop, self.cat_max_ratio, self.ignore_index):
                return box
        return box


@dataclass
class EvalTransform:
    """Test pipeline: optional keep-ratio resize of the image only; the label stays at full size
    (logits are upsampled to the label, daformer_mic.md §5 Evaluation)."""

    scale: tuple[int, int] | None = None

    def __call__(self, image: np.ndarray, label: np.ndarray | None) -> dict[str, torch.Tensor]:
        h, w = image.shape[:2]
        if self.scale is not None:
            image, _ = _resize(image, [], rescale_size(w, h, tuple(self.scale)))
        out = {"img": to_tensor(image)}
        if label is not None:
            out["gt"] = torch.from_numpy(label.astype(np.int64))
        return out

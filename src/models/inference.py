"""Whole-image and sliding-window inference (mmseg ``whole`` / ``slide`` test modes, daformer_mic.md §3, §5).

* DAFormer evaluates in ``whole`` mode on 1024x512 images, logits bilinearly upsampled to the original
  1024x2048 (§5): :func:`whole_inference` with ``out_size``.
* HRDA/MIC evaluate in ``slide`` mode (crop 1024x1024, stride 512x512, ``batched_slide=True``) on the full
  2048x1024 image, averaging the logits of overlapping windows (§3): :func:`slide_inference`.
  ``batched=False`` runs the windows one at a time, which lowers validation memory (HRDA#27).

Both return logits (no softmax); callers take the argmax. Gradients are not disabled here: wrap the call
in ``torch.no_grad()`` as needed.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["whole_inference", "slide_inference", "slide_windows", "slide_count_map", "windows_cover"]


class _Predictor(Protocol):
    def predict(self, x: Tensor) -> Tensor: ...


def _resize(logits: Tensor, size: tuple[int, int] | None, align_corners: bool = False) -> Tensor:
    if size is None or tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def whole_inference(
    model: _Predictor, x: Tensor, *, out_size: tuple[int, int] | None = None, align_corners: bool = False
) -> Tensor:
    """``model.predict(x)`` (logits at x's size), then bilinear resize to ``out_size`` if given
    (``align_corners``: False, mmseg's; True, the video references' ADVENT evaluation)."""
    return _resize(model.predict(x), out_size, align_corners)


def slide_windows(
    height: int, width: int, *, crop_size: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """Window boxes ``(y1, y2, x1, x2)`` covering an image, mmseg ``slide_inference`` rule.

    Windows start every ``stride`` pixels; the number per axis is
    ``max(L - crop + stride - 1, 0) // stride + 1``, and a window that would overhang the border is shifted
    back so that it ends at the border. If the image is smaller than the crop along an axis, the single window
    along that axis is the whole axis.
    """
    h_crop, w_crop = crop_size
    h_stride, w_stride = stride
    if min(h_crop, w_crop, h_stride, w_stride) <= 0:
        raise ValueError(f"crop_size {crop_size} and stride {stride} must be positive")
    n_h = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    n_w = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for i in range(n_h):
        y2 = min(i * h_stride + h_crop, height)
        y1 = max(y2 - h_crop, 0)
        for j in range(n_w):
            x2 = min(j * w_stride + w_crop, width)
            x1 = max(x2 - w_crop, 0)
            boxes.append((y1, y2, x1, x2))
    return boxes


def windows_cover(boxes: list[tuple[int, int, int, int]], height: int, width: int) -> bool:
    """True if a grid of window boxes (rows x columns, as :func:`slide_windows` makes) covers every pixel.

    Pure Python on the box coordinates, so the guard against a division by zero costs nothing and stays
    out of traced / exported graphs (``src.export``; a tensor test would be a data-dependent branch there).
    """
    rows = sorted({(y1, y2) for y1, y2, _, _ in boxes})
    cols = sorted({(x1, x2) for _, _, x1, x2 in boxes})

    def covered(intervals: list[tuple[int, int]], n: int) -> bool:
        end = 0
        for a, b in intervals:
            if a > end:
                return False
            end = max(end, b)
        return end >= n

    return covered(rows, height) and covered(cols, width) and len(set(boxes)) == len(rows) * len(cols)


def slide_count_map(
    height: int, width: int, *, crop_size: tuple[int, int], stride: tuple[int, int]
) -> Tensor:
    """(H, W) number of windows covering each pixel (>= 1 everywhere)."""
    count = torch.zeros(height, width)
    for y1, y2, x1, x2 in slide_windows(height, width, crop_size=crop_size, stride=stride):
        count[y1:y2, x1:x2] += 1
    return count


def slide_inference(
    model: _Predictor,
    x: Tensor,
    *,
    num_classes: int,
    crop_size: tuple[int, int],
    stride: tuple[int, int],
    batched: bool = True,
    out_size: tuple[int, int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """Sliding-window logits: sum of window logits divided by the per-pixel window count.

    Args:
        model: anything with ``predict(x) -> logits at x's size``.
        x: (B, C, H, W) images.
        num_classes: channels of the logits.
        crop_size, stride: (h, w) window size and step.
        batched: run all windows of the batch in one forward (HRDA ``batched_slide``); False runs one window
            at a time (less memory, same result).
        out_size: optional final bilinear resize.
        align_corners: of the bilinear resizes (window logits to the window, the final resize).
    """
    b, _, h, w = x.shape
    boxes = slide_windows(h, w, crop_size=crop_size, stride=stride)
    logits = x.new_zeros((b, num_classes, h, w))
    count = x.new_zeros((1, 1, h, w))

    def run(crops: Tensor) -> Tensor:
        out = model.predict(crops)
        if out.shape[1] != num_classes:
            raise ValueError(f"model returned {out.shape[1]} channels, expected num_classes={num_classes}")
        return _resize(out, tuple(crops.shape[-2:]), align_corners)

    if batched:
        # All windows have the same size (min(crop, image) per axis), so they stack along the batch axis,
        # window-major; unflattening by the window count keeps the batch size symbolic (ONNX export).
        crops = torch.stack([x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes]).flatten(0, 1)
        outs = run(crops).unflatten(0, (len(boxes), -1)).unbind(0)
    else:
        outs = (run(x[:, :, y1:y2, x1:x2]) for y1, y2, x1, x2 in boxes)
    if not windows_cover(boxes, h, w):  # cannot happen with slide_windows; never divide by zero silently
        raise RuntimeError("sliding windows do not cover the image")
    for (y1, y2, x1, x2), out in zip(boxes, outs, strict=True):
        logits[:, :, y1:y2, x1:x2] += out.to(logits.dtype)
        count[:, :, y1:y2, x1:x2] += 1
    return _resize(logits / count, out_size, align_corners)

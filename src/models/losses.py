"""Pixel-weighted cross-entropy with the mmseg 0.16 reduction, or ADVENT's valid-pixel mean.

Source: mmseg 0.16 ``cross_entropy_loss.py`` / ``losses/utils.py`` / ``decode_head.py`` as used by
DAFormer / HRDA / MIC, daformer_mic.md §1.2 ("Loss reduction detail"); ADVENT's ``loss_calc`` as used by the
video references DA-VSN / TPS / UDASS video (video_uda.md §2.3, §3.3; udass.md §2.6).

- Logits are bilinearly resized to the label size: ``align_corners=False`` (mmseg's ``resize``, the image
  methods) or ``True`` (ADVENT's ``nn.Upsample(..., align_corners=True)``, the video references).
- Per-pixel CE with ``ignore_index`` (ignored pixels contribute 0), times the pixel weight.
- ``reduction="all_pixels"`` (default, the mmseg quirk of the image code): mean over **all** B·H·W pixels,
  ignored ones included in the denominator. ``reduction="valid_pixels"`` (ADVENT ``loss_calc``, the video
  code): divide by the number of non-ignored pixels.
- Computed in float32 even when the logits are bf16/fp16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("all_pixels", "valid_pixels")


def weighted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    ignore_index: int = 255,
    reduction: str = "all_pixels",
    align_corners: bool = False,
) -> Tensor:
    """logits (B,C,h,w), target (B,H,W) or (B,1,H,W) long, weight (B,H,W) or None -> scalar float32."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if target.dim() == 4:
        target = target.squeeze(1)
    target = target.long()
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(
                logits, size=target.shape[-2:], mode="bilinear", align_corners=bool(align_corners)
            )
        loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    if weight is not None:
        if weight.dim() == 4:
            weight = weight.squeeze(1)
        loss = loss * weight.float()
    if reduction == "all_pixels":
        return loss.mean()
    n_valid = (target != ignore_index).sum().clamp_min(1)
    return loss.sum() / n_valid

"""Pseudo-labels and their confidence weight from the teacher's softmax.

Source: DACS / DAFormer / MIC ``dacs.py`` (pseudo-label step), daformer_mic.md §1.2 step 5 and §1.5.

- ``ŷ = argmax_c p``, ``p_max = max_c p``.
- Weight, ``weight_mode="batch"`` (default, the reference / DACS): **one scalar per batch**
  q = #(pixels with p_max ≥ 0.968) / #(pixels of the whole batch), broadcast to every pixel.
  ``weight_mode="pixel"``: per-pixel 0/1 weight ``p_max ≥ threshold``.
- Pseudo-label crop v1 (DAFormer, 512 crops): zero the weight of the first ``ignore_top`` (15) and the last
  ``ignore_bottom`` (120) rows. Defaults 0/0 (the DACS defaults); the DAFormer configs set 15/120.
- Pseudo-label crop v2 (HRDA/MIC): multiply by a crop-aware ``valid`` mask, cropped from the full-image
  margin mask of :func:`crop_pseudo_margin_mask` (margins 30/240/30/30 at 2048x1024) together with the image.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def crop_pseudo_margin_mask(
    height: int, width: int, margins: tuple[int, int, int, int] = (30, 240, 30, 30)
) -> np.ndarray:
    """Full-image (height, width) uint8 mask, 0 on the (top, bottom, left, right) margins and 1 elsewhere.

    HRDA/MIC ``crop_pseudo_margins`` (daformer_mic.md §1.5): built at the full image resolution
    (30, 240, 30, 30 for Cityscapes at 2048x1024) and resized/cropped/flipped with the image as a
    segmentation field (nearest), so the margins only bite where a crop touches the image border.
    """
    top, bottom, left, right = (int(m) for m in margins)
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"margins must be >= 0, got {margins}")
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top : max(top, height - bottom), left : max(left, width - right)] = 1
    return mask


class PseudoLabeler:
    """Teacher probabilities -> (pseudo-label, confidence weight, p_max) (DACS, daformer_mic.md §1.2).

    ``weight_mode="batch"`` (default) is the reference's per-batch scalar quality weight; ``"pixel"`` is a
    per-pixel thresholded 0/1 weight.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.968,
        weight_mode: str = "batch",
        ignore_top: int = 0,
        ignore_bottom: int = 0,
    ) -> None:
        if weight_mode not in ("batch", "pixel"):
            raise ValueError(f"weight_mode must be 'batch' or 'pixel', got {weight_mode!r}")
        if ignore_top < 0 or ignore_bottom < 0:
            raise ValueError("ignore_top / ignore_bottom must be >= 0")
        self.threshold = float(threshold)
        self.weight_mode = weight_mode
        self.ignore_top = int(ignore_top)
        self.ignore_bottom = int(ignore_bottom)

    @torch.no_grad()
    def __call__(
        self, probs: Tensor, valid: Tensor | None = None, *, step: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """probs (B,C,H,W) -> (ŷ long (B,H,W), w float32 (B,H,W), p_max float32 (B,H,W)).

        ``step`` is accepted and ignored (the pseudo-labeler interface shared with OMUDA's class-decoupled
        pseudo-labeler, ``src.uda.cdm``, whose warm-up depends on the training step).

        ``valid``: optional crop-aware margin mask (B,H,W) or (B,1,H,W) multiplied into the weight.
        """
        p_max, y_hat = probs.detach().float().max(dim=1)
        confident = p_max >= self.threshold
        if self.weight_mode == "batch":
            q = confident.sum(dtype=torch.float32) / confident.numel()
            w = q.expand_as(p_max).clone()
        else:
            w = confident.float()
        h = w.shape[-2]
        if self.ignore_top > 0:
            w[:, : self.ignore_top, :] = 0.0
        if self.ignore_bottom > 0:
            w[:, max(0, h - self.ignore_bottom) :, :] = 0.0
        if valid is not None:
            if valid.dim() == 4:
                valid = valid.squeeze(1)
            if valid.shape != w.shape:
                raise ValueError(
                    f"valid mask shape {tuple(valid.shape)} != pseudo-label shape {tuple(w.shape)}"
                )
            w = w * valid.to(device=w.device, dtype=w.dtype)
        return y_hat, w, p_max

"""Pseudo-label quality against the target's own labels: diagnostics only, never a loss (issue 17).

The synthetic generator writes labels for its target split too (the oracle trains on them). With
``data.target_diagnostic_labels=true`` the training batch carries them as ``target.diag_gt`` (cropped and
flipped with the image, never used to choose the crop), and the UDA module logs, on the pixels that have a
label:

- ``train/pseudo_accuracy``: how often the teacher's pseudo-label is right (unweighted);
- ``train/pseudo_precision``: the same, weighted by the pseudo-label weight the losses use (DACS's q, CDM's
  per-pixel weight): how right the *kept* pseudo-labels are;
- ``train/pseudo_kept``: the share of pixels with a weight above 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from src.data.classes import IGNORE_INDEX

__all__ = ["pseudo_label_quality"]


@torch.no_grad()
def pseudo_label_quality(y_hat: Tensor, weight: Tensor, gt: Tensor, ignore_index: int = IGNORE_INDEX) -> dict:
    """Logs of :mod:`src.uda.diagnostics` for pseudo-labels ``y_hat`` (B,H,W), weights (B,H,W), labels gt."""
    gt = gt.to(y_hat.device).long()
    gt = gt.squeeze(1) if gt.dim() == 4 else gt
    valid = gt != ignore_index
    if not bool(valid.any()):
        return {}
    right = (y_hat == gt) & valid
    w = weight.float() * valid
    out = {
        "train/pseudo_accuracy": right.float().sum() / valid.sum(),
        "train/pseudo_kept": (w > 0).float().sum() / valid.sum(),
    }
    if float(w.sum()) > 0:
        out["train/pseudo_precision"] = (w * right).sum() / w.sum()
    return out

"""ClassMix of a source and a target batch, followed by the DACS strong augmentation.

Source: DACS / DAFormer ``mmseg/models/utils/dacs_transforms.py`` (``get_class_masks``, ``one_mix``,
``strong_transform``), daformer_mic.md §1.3, and DAFormer#19 for the batch-level class set.

- Class set, ``class_choice="batch"`` (default, the reference quirk): ``unique`` over the **whole source
  label batch**, 255 included when present; each sample draws its own ceil(n/2) = (n + n % 2) / 2 classes
  without replacement from that shared set. ``class_choice="sample"``: original DACS, each sample's own
  classes with the ignore index excluded.
- M_i = 1 where the source label of sample i is one of its chosen classes.
- x_mix = M·x_s + (1−M)·x_t; y_mix = M·y_s + (1−M)·ŷ_t; w_mix = M·1 + (1−M)·w_t.
- Then the strong augmentation (one ``draw`` per call, i.e. per training step, per-sample factors) on the
  mixed images only; labels and weights are never colour-transformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from src.uda.augment import StrongAugment

if TYPE_CHECKING:
    from src.uda.mixing.quadmix import FeaturePartner


@dataclass
class MixOutput:
    """Mixed batch: images (B,3,H,W), labels (B,H,W) long, weights (B,H,W) float, masks (B,1,H,W).

    ``loss_weight`` multiplies this sample's loss (QuadMix: 0.5 for each of its two samples, udass.md §1.4i);
    ``feature_partner`` asks for a decoder-embedding blend with another sample of the same call (QuadMix
    feature mixing, :class:`src.uda.mixing.quadmix.FeaturePartner`); None = plain forward.
    """

    x_mix: Tensor
    y_mix: Tensor
    w_mix: Tensor
    mask: Tensor
    loss_weight: float = 1.0
    feature_partner: FeaturePartner | None = None


def _squeeze_label(y: Tensor) -> Tensor:
    return y.squeeze(1) if y.dim() == 4 else y


class ClassMix:
    """ClassMix (DACS) with the DAFormer batch-level class set quirk as default (daformer_mic.md §1.3)."""

    def __init__(
        self,
        *,
        class_choice: str = "batch",
        augment: StrongAugment | None = None,
        ignore_index: int = 255,
    ) -> None:
        if class_choice not in ("batch", "sample"):
            raise ValueError(f"class_choice must be 'batch' or 'sample', got {class_choice!r}")
        self.class_choice = class_choice
        self.augment = augment
        self.ignore_index = int(ignore_index)

    def _choose(self, classes: Tensor, generator: torch.Generator) -> Tensor:
        n = int(classes.numel())
        k = (n + n % 2) // 2
        idx = torch.randperm(n, generator=generator)[:k].to(classes.device)
        return classes[idx]

    def masks(self, y_s: Tensor, generator: torch.Generator) -> Tensor:
        """Per-sample class masks (B,1,H,W) float from source labels (B,H,W) or (B,1,H,W)."""
        y_s = _squeeze_label(y_s)
        batch_classes = torch.unique(y_s) if self.class_choice == "batch" else None
        out = []
        for i in range(y_s.shape[0]):
            if batch_classes is not None:
                classes = batch_classes
            else:
                classes = torch.unique(y_s[i])
                classes = classes[classes != self.ignore_index]
            chosen = self._choose(classes, generator)
            out.append(torch.isin(y_s[i], chosen))
        return torch.stack(out).unsqueeze(1).float()

    def __call__(
        self,
        x_s: Tensor,
        y_s: Tensor,
        x_t: Tensor,
        y_t_hat: Tensor,
        w_t: Tensor,
        generator: torch.Generator,
        *,
        step: int | None = None,
        p_max: Tensor | None = None,
    ) -> MixOutput:
        """`step` and `p_max` are part of the mixer interface (QuadMix needs them); ClassMix ignores them."""
        y_s = _squeeze_label(y_s)
        y_t_hat = _squeeze_label(y_t_hat)
        m = self.masks(y_s, generator)
        mb = m[:, 0].bool()
        x_mix = m.to(x_s.dtype) * x_s + (1 - m.to(x_s.dtype)) * x_t
        y_mix = torch.where(mb, y_s.long(), y_t_hat.long())
        w_mix = torch.where(mb, torch.ones_like(w_t, dtype=torch.float32), w_t.float())
        if self.augment is not None:
            params = self.augment.draw(generator)
            x_mix = self.augment(x_mix, params, generator)
        return MixOutput(x_mix=x_mix, y_mix=y_mix, w_mix=w_mix, mask=m)

"""MIC, masked image consistency (daformer_mic.md §2, mask_mode='separatetrgaug').

The student sees the target image after its *own* strong augmentation (one jitter / blur decision per
step, factors per sample) and a random block mask; it is trained on the teacher's pseudo-label and
weight from the clean, unaugmented image (`mask_alpha='same'`, `mask_pseudo_threshold='same'`), with
weight λ = 1. The masker is pluggable (`uda/mask/*.yaml`): MIC's `BlockMasker`, or any object with the
same call that also accepts the pseudo-label context (OMUDA's context-aware masking).
"""

from __future__ import annotations

import torch

from src.uda.augment import StrongAugment


class MaskedImageConsistency:
    def __init__(self, *, masker, augment: StrongAugment | None = None, weight: float = 1.0) -> None:
        self.masker = masker
        self.augment = augment
        self.weight = weight

    def __call__(
        self,
        x_t: torch.Tensor,
        *,
        generator: torch.Generator,
        pseudo_label: torch.Tensor | None = None,
        confidence: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (masked augmented target images, keep-mask (B,1,H,W), 1 = visible)."""
        x = x_t
        if self.augment is not None:
            x = self.augment(x, self.augment.draw(generator), generator)
        return self.masker(x, generator, pseudo_label=pseudo_label, confidence=confidence)

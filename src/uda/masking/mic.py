"""MIC, masked image consistency (daformer_mic.md §2), with MIC's ``mask_mode``.

The student sees masked images (a random block mask, or any pluggable masker) and is trained on their
labels: the target's pseudo-label and weight from the clean, unaugmented image (`mask_alpha='same'`,
`mask_pseudo_threshold='same'`), with weight λ = 1. The masker is pluggable (`uda/mask/*.yaml`): MIC's
`BlockMasker`, or any object with the same call that also accepts the pseudo-label context (OMUDA's
context-aware masking).

``mode`` is MIC's ``mask_mode`` (MIC ``seg/mmseg/models/uda/masking_consistency_module.py``; the values of
``seg/experiments.py`` exp 80):

- ``separatetrgaug`` (GTA / SYNTHIA -> Cityscapes, the default): the target images, after their *own*
  strong augmentation (one jitter / blur decision per step, factors per sample).
- ``separatetrg``: the target images without the augmentation (MIC Table 7 "w/o color augmentation").
- ``separate`` (Cityscapes -> ACDC / Dark Zurich): **one source image and one target image**, the first of
  each batch, stacked into a batch of two: the source image with its ground truth and weight 1, the target
  image with its pseudo-label and weight; no colour augmentation. (MIC asserts a batch of exactly 2 and takes
  ``img[0]`` and ``target_img[0]``; any batch size works here, the first of each is taken.)
- ``separateaug``: ``separate`` plus the strong augmentation.

The augmentation of the ``*aug`` modes is ``augment`` (the DACS parameters, as MIC reads
``color_jitter_strength`` / ``color_jitter_probability`` from the same config); the other modes ignore it.

``update_bn_stats`` (ours; default ``True``, the reference): whether the masked-image forward updates the
student's BatchNorm running statistics. In MIC it does, like every student forward, so after each step about a
third of the running statistics the student is *evaluated* with come from masked images (momentum 0.1; with
MiT, which has LayerNorm only, the DAFormer head's ConvModules hold the BN layers; a ResNet backbone has its
own). ``False`` runs that forward with the statistics frozen (src/models/bn_stats.py): it still normalises
with its own batch statistics, so its loss, gradients and every weight are unchanged (a test); only the
running statistics are left to the source and mixed batches. Why it is there: on the synthetic benchmark's dev
split it moved MIC from 33.8 to 35.9 mIoU (DAFormer's 35.9) and OMUDA from 33.8 to 35.2 with the same weights
(docs/omuda_studies.md "Most of that cost is the BatchNorm statistics the student is evaluated with").
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from src.models.bn_stats import BNStatsFrozen
from src.uda.augment import StrongAugment

#: MIC's mask modes: (which images, colour augmentation)
MODES = {
    "separatetrgaug": ("target", True),
    "separatetrg": ("target", False),
    "separate": ("source_target", False),
    "separateaug": ("source_target", True),
}


class MaskedInputs(NamedTuple):
    """What the masked images are made of: images, labels (B,H,W), pixel weights (B,H,W), confidences (the
    masker's context; 1 on ground truth) and which rows of the batch are target images (a slice)."""

    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    confidence: torch.Tensor | None
    target_rows: slice


class MaskedImageConsistency:
    def __init__(
        self,
        *,
        masker,
        augment: StrongAugment | None = None,
        weight: float = 1.0,
        mode: str = "separatetrgaug",
        update_bn_stats: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(
                f"uda.mask.mode={mode!r} is not a MIC mask mode: choose one of {', '.join(MODES)} "
                f"(separatetrgaug for GTA/SYNTHIA -> Cityscapes, separate for Cityscapes -> ACDC/Dark Zurich)"
            )
        self.images, self.augments = MODES[mode]
        if self.augments and augment is None:
            raise ValueError(
                f"uda.mask.mode={mode} augments the masked images but uda.mask.augment is null: give the "
                f"augmentation, or use the mode without it ({mode[: -len('aug')]})"
            )
        self.mode = mode
        self.masker = masker
        self.augment = augment
        self.weight = weight
        self.update_bn_stats = bool(update_bn_stats)

    @property
    def uses_source(self) -> bool:
        """The masked batch holds a source image (``separate``, ``separateaug``)."""
        return self.images == "source_target"

    def inputs(
        self,
        x_s: torch.Tensor,
        y_s: torch.Tensor,
        x_t: torch.Tensor,
        y_t: torch.Tensor,
        w_t: torch.Tensor,
        p_t: torch.Tensor | None = None,
    ) -> MaskedInputs:
        """The images of the masked batch, their labels and weights (before augmentation and masking)."""
        if not self.uses_source:
            return MaskedInputs(x_t, y_t, w_t, p_t, slice(0, x_t.shape[0]))
        x = torch.cat([x_s[:1], x_t[:1]])
        y = torch.cat([y_s[:1].to(y_t.dtype), y_t[:1]])
        w = torch.cat([torch.ones_like(w_t[:1]), w_t[:1]])  # MIC: gt_pixel_weight = 1 on the source image
        conf = None if p_t is None else torch.cat([torch.ones_like(p_t[:1]), p_t[:1]])
        return MaskedInputs(x, y, w, conf, slice(1, 2))

    def __call__(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator,
        pseudo_label: torch.Tensor | None = None,
        confidence: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (the masked [augmented] images, keep-mask (B,1,H,W), 1 = visible)."""
        if self.augments:
            x = self.augment(x, self.augment.draw(generator), generator)
        return self.masker(x, generator, pseudo_label=pseudo_label, confidence=confidence)

    def forward_context(self, student: torch.nn.Module) -> contextlib.AbstractContextManager:
        """The context of the student's masked-image forward: BN running statistics frozen unless
        ``update_bn_stats`` (the reference updates them)."""
        return contextlib.nullcontext() if self.update_bn_stats else BNStatsFrozen(student)

"""Negative controls for the synthetic benchmark (issue 15): methods broken on purpose, test-only code.

A benchmark that rewards a broken method proves nothing, so the README's image table has a row whose
self-training is broken in one essential ingredient and must fall to source-only or below. The product has no
debug flag for it; a run names this class on the command line (the repo root is on ``sys.path`` under
``python -m``):

    python -m src.train -m experiment=mic_synthetic \
        uda.teacher._target_=tests.controls.FrozenTeacher seed=0,1,2
    python -m src.train -m experiment=mic_synthetic \
        uda.pseudo._target_=tests.controls.PermutedPseudoLabeler seed=0,1,2
    python -m src.train experiment=tps_synthetic_video <the switch teacher of the README's video table> \
        uda.pseudo._target_=tests.controls.PermutedTemporalPseudoLabels
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from src.uda.pseudo_label import PseudoLabeler
from src.uda.teacher import EMATeacher
from src.uda.video.tps import CrossFramePseudoLabels, TemporalPseudoSupervision


class FrozenTeacher(EMATeacher):
    """MIC's teacher frozen at the student's step-0 weights (the pre-trained encoder and an untrained head):
    its pseudo-labels never improve, so every target loss trains on noise."""

    def update(self, student: nn.Module, step: int) -> float:
        return super().update(student, 0) if step == 0 else 1.0


class PermutedPseudoLabeler(PseudoLabeler):
    """The teacher's pseudo-labels with every class shifted to the next id (c -> c + 1 mod C), their
    confidence weights unchanged: self-training on wrong labels at the weight of the right ones."""

    @torch.no_grad()
    def __call__(self, probs: Tensor, valid: Tensor | None = None, *, step: int | None = None):
        y_hat, w, p_max = super().__call__(probs, valid, step=step)
        return (y_hat + 1) % probs.shape[1], w, p_max


class PermutedTemporalPseudoLabels(TemporalPseudoSupervision):
    """TPS's cross-frame pseudo-labels (ŷ of the current frame, its low-resolution map and the key frame's
    labels that video QuadMix pastes) with every class shifted to the next id, their confidences unchanged:
    the video table's negative control, temporal self-training on wrong labels."""

    @torch.no_grad()
    def labels(self, logits_k: Tensor, *args, **kwargs) -> CrossFramePseudoLabels:
        pl = super().labels(logits_k, *args, **kwargs)
        c = logits_k.shape[1]
        return replace(pl, y=(pl.y + 1) % c, y_full=(pl.y_full + 1) % c, y_key=(pl.y_key + 1) % c)

    @torch.no_grad()
    def low_res_labels(self, logits_k: Tensor, *args, **kwargs) -> Tensor:  # the CNN's auxiliary head
        return (super().low_res_labels(logits_k, *args, **kwargs) + 1) % logits_k.shape[1]

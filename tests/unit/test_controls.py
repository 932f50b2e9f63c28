"""The benchmark's negative controls (tests/controls.py) break what they say they break, and nothing else."""

from __future__ import annotations

import torch
from torch import nn

from src.uda.pseudo_label import PseudoLabeler
from src.uda.video.tps import TemporalPseudoSupervision
from tests.controls import FrozenTeacher, PermutedPseudoLabeler, PermutedTemporalPseudoLabels


def test_frozen_teacher_keeps_the_step_0_weights() -> None:
    torch.manual_seed(0)
    student = nn.Linear(4, 3)
    teacher = FrozenTeacher(student=student, alpha=0.5)
    teacher.update(student, 0)
    start = student.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    for step in (1, 2, 3):
        teacher.update(student, step)
    assert torch.equal(teacher.model.weight, start)  # an EMA teacher would have moved halfway each step


def test_permuted_pseudo_labels_shift_every_class_and_keep_the_weights() -> None:
    probs = torch.softmax(torch.randn(2, 19, 8, 8) * 5, dim=1)
    y, w, p = PseudoLabeler(ignore_bottom=2)(probs)
    y_bad, w_bad, p_bad = PermutedPseudoLabeler(ignore_bottom=2)(probs)
    assert torch.equal(y_bad, (y + 1) % 19) and not (y_bad == y).any()
    assert torch.equal(w_bad, w) and torch.equal(p_bad, p)


def test_permuted_temporal_pseudo_labels_shift_every_label_map_and_keep_the_confidences() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 19, 8, 8) * 5
    flow = torch.randn(2, 2, 16, 16)
    flipped = torch.tensor([False, True])
    good = TemporalPseudoSupervision().labels(logits, flow, flipped, (16, 16))
    bad = PermutedTemporalPseudoLabels().labels(logits, flow, flipped, (16, 16))
    for name in ("y", "y_full", "y_key"):
        assert torch.equal(getattr(bad, name), (getattr(good, name) + 1) % 19), name
    aux_good = TemporalPseudoSupervision().low_res_labels(logits, flow, flipped)
    aux_bad = PermutedTemporalPseudoLabels().low_res_labels(logits, flow, flipped)
    assert torch.equal(aux_bad, (aux_good + 1) % 19)
    for name in ("p", "p_full", "p_key"):
        assert torch.equal(getattr(bad, name), getattr(good, name)), name

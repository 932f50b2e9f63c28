"""Negative controls for the synthetic benchmark (issue 15): methods broken on purpose, test-only code.

A benchmark that rewards a broken method proves nothing, so the README's image table has a row whose
self-training is broken in one essential ingredient and must fall to source-only or below. The product has no
debug flag for it; a run names this class on the command line (the repo root is on ``sys.path`` under
``python -m``):

    python -m src.train -m experiment=mic_synthetic \
        uda.teacher._target_=tests.controls.FrozenTeacher seed=0,1,2
"""

from __future__ import annotations

from torch import nn

from src.uda.teacher import EMATeacher


class FrozenTeacher(EMATeacher):
    """MIC's teacher frozen at the student's step-0 weights (the pre-trained encoder and an untrained head):
    its pseudo-labels never improve, so every target loss trains on noise."""

    def update(self, student: nn.Module, step: int) -> float:
        return super().update(student, 0) if step == 0 else 1.0

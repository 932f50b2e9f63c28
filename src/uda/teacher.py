"""Mean teacher for self-training: EMA of the student's parameters.

Source: DACS / DAFormer / MIC ``dacs.py`` (``_init_ema_weights``, ``_update_ema``, pseudo-label
generation), daformer_mic.md §1.2 steps 1 and 5, §1.4.

- ``alpha_t = min(1 - 1/(step + 1), alpha)`` with the 0-based step: step 1 -> 0.5, step 999 -> 0.999.
- Step 0 copies the student's parameters; later steps do ``θ_T ← α_t θ_T + (1 − α_t) θ_S`` over
  **parameters only**: buffers (BN running statistics, ``num_batches_tracked``) are *not* averaged, as in
  the reference. The update runs at the start of a step, with the student weights of the previous step.
- The teacher never receives gradients (parameters frozen, prediction under ``no_grad``).
- ``warm_start`` (set by ``model.init_from`` when it loads a trained teacher, src/uda/init_from.py; ours):
  no copy at step 0 and no ramp, ``θ_T ← α θ_T + (1 − α) θ_S`` from the first step: the loaded teacher is
  kept.
- Pseudo-label forward: Dropout and DropPath modules in eval; BatchNorm in **train** mode by default
  (``bn_mode="train"``, the reference: the teacher normalises with the target batch statistics, which also
  updates the teacher's BN running buffers), or eval with ``bn_mode="eval"``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

# Stochastic-depth modules are matched by class name so that timm's DropPath, a locally defined DropPath
# (e.g. in a MiT backbone) and torchvision's StochasticDepth are all covered without importing them.
_DROP_PATH_NAMES = frozenset({"DropPath", "StochasticDepth"})


def _is_dropout(m: nn.Module) -> bool:
    return isinstance(m, _DropoutNd) or type(m).__name__ in _DROP_PATH_NAMES


def average_into(model: nn.Module, student: nn.Module, alpha: float) -> None:
    """model ← alpha · model + (1 − alpha) · student, parameter by parameter (the mean teacher's rule,
    daformer_mic.md §1.4); the architectures must match (one-line error naming the first mismatch)."""
    t = list(model.parameters())
    s = list(student.parameters())
    if len(t) != len(s):
        raise ValueError(f"teacher has {len(t)} parameters, student {len(s)}: not the same architecture")
    for i, (a, b) in enumerate(zip(t, s)):
        if a.shape != b.shape:
            raise ValueError(f"parameter {i}: teacher shape {tuple(a.shape)} != student {tuple(b.shape)}")
    s = [p.detach().to(dtype=q.dtype, device=q.device) for p, q in zip(s, t)]
    torch._foreach_mul_(t, alpha)
    torch._foreach_add_(t, s, alpha=1.0 - alpha)


class EMATeacher(nn.Module):
    """Exponential-moving-average teacher (DACS / DAFormer / MIC, daformer_mic.md §1.2, §1.4).

    ``self.model`` is a registered submodule so the teacher is saved in checkpoints and moved to the device
    with its parent. The wrapped model must provide ``predict(x)`` returning logits at x's size.
    """

    def __init__(self, *, student: nn.Module, alpha: float = 0.999, bn_mode: str = "train") -> None:
        super().__init__()
        if bn_mode not in ("train", "eval"):
            raise ValueError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.alpha = float(alpha)
        self.bn_mode = bn_mode
        #: the teacher holds trained weights (model.init_from): EMA at alpha from step 0, no copy, no ramp
        self.warm_start = False

    @staticmethod
    def alpha_at(step: int, alpha: float) -> float:
        """EMA ramp: min(1 − 1/(step + 1), alpha) with the 0-based step."""
        return min(1.0 - 1.0 / (step + 1), alpha)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Step 0: copy the student's parameters; else EMA over parameters. Returns the α used.

        With ``warm_start``: EMA at ``alpha`` at every step, step 0 included."""
        if step == 0 and not self.warm_start:
            average_into(self.model, student, 0.0)  # alpha 0: the student's copy
            return 0.0
        a = self.alpha if self.warm_start else self.alpha_at(step, self.alpha)
        average_into(self.model, student, a)
        return a

    def set_pseudo_label_mode(self) -> None:
        """Train mode with Dropout/DropPath in eval, BN in train (``bn_mode="train"``) or eval."""
        self.model.train()
        for m in self.model.modules():
            if _is_dropout(m):
                m.eval()
            elif isinstance(m, _BatchNorm):
                m.train(self.bn_mode == "train")

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Teacher softmax probabilities (B,C,H,W), float32, at the input size."""
        self.set_pseudo_label_mode()
        logits = self.model.predict(x)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.softmax(logits.float(), dim=1)

"""The video reference's pseudo-labeller: a frozen pre-trained model first, then the student itself.

Source: udass.md §2.5(c) and §2.7 ("teacher switch"), video_uda.md §3.4: the UDASS video scripts produce
the TPS pseudo-labels with a frozen TPS model (``tps_{viper,syn}2city_pretrained.pth``) for the first 8000
(CNN) / 4000 (ViT) iterations, then with the current student under no_grad (no EMA). TPS itself uses the
student from the start (``switch_step=0``).

An option next to the default EMA teacher (src/uda/teacher.py): ``uda/teacher=switch``.

- ``checkpoint``: the frozen model's weights, a checkpoint of this library (its ``student.*`` weights, e.g.
  the ``last.ckpt`` of a source-only or TPS run with the same model) or a plain state dict of the model.
  Read at step 0 of a fresh run (a resumed run gets the frozen model back from its own checkpoint, and a
  module rebuilt for evaluation does not need the file); a two-frame model may load image weights without
  the fusion layer (it keeps its [I | 0] initialisation, like the reference's ``strict=False``).
  ``None``: the frozen model is the student's initial weights.
- Pseudo-label mode: Dropout / DropPath in eval, BatchNorm in train (``bn_mode="train"``, the reference's
  train-mode network) or eval; when the student is the teacher its modes are restored afterwards.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from src.uda.teacher import _is_dropout
from src.utils.phases import as_step
from src.utils.safe_load import check_checkpoint_config, checkpoint_config, load_weights_file


def _pseudo_label_modes(model: nn.Module, bn_mode: str) -> None:
    model.train()
    for m in model.modules():
        if _is_dropout(m):
            m.eval()
        elif isinstance(m, _BatchNorm):
            m.train(bn_mode == "train")


def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` (a library checkpoint: its ``student.*`` tensors; or a plain state dict) into ``model``.

    Only the fusion layer (``sf_layer``) may be missing; anything else missing or unexpected is an error.
    The file is read weights-only, and a library checkpoint's stored config is checked like any checkpoint's
    (src/utils/safe_load.py), although only its tensors are used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"uda.teacher.checkpoint={path} does not exist: give the checkpoint of a trained run "
            f"(e.g. <run dir>/checkpoints/last.ckpt) or null to freeze the initial weights"
        )
    ckpt = load_weights_file(path, "uda.teacher.checkpoint=", expected="a trained run's .ckpt or state dict")
    cfg = checkpoint_config(ckpt)
    if cfg is not None:  # only its tensors are read, but an edited library checkpoint is refused everywhere
        check_checkpoint_config(cfg, path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"uda.teacher.checkpoint={path} holds no state dict")
    if any(k.startswith("student.") for k in state):
        state = {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("sf_layer.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"uda.teacher.checkpoint={path} does not fit the model: {len(missing)} missing tensors (e.g. "
            f"{missing[:2]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]}); "
            f"it must come from a run with the same model"
        )


class SwitchTeacher(nn.Module):
    """Frozen model for ``step < switch_step``, then the student itself (udass.md §2.5c).

    The interface of :class:`src.uda.teacher.EMATeacher` (``update``, ``predict``, ``model``,
    ``set_pseudo_label_mode``) plus :meth:`pseudo_label_model`, the network that labels this step.
    """

    def __init__(
        self,
        *,
        student: nn.Module,
        switch_step: int = 8000,
        checkpoint: str | None = None,
        bn_mode: str = "train",
    ) -> None:
        super().__init__()
        if bn_mode not in ("train", "eval"):
            raise ValueError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")
        if switch_step < 0:
            raise ValueError(f"switch_step must be >= 0, got {switch_step}")
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.switch_step = as_step(switch_step, "switch_step")
        self.checkpoint = checkpoint
        self.bn_mode = bn_mode
        self._student: list[nn.Module] = [student]  # a plain reference: not a submodule, not in state_dict
        self._step = 0

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Called at the start of every step: remembers the step and the student; step 0 sets the frozen
        model (the checkpoint, or a copy of the student's initial weights). Returns 0 (no averaging)."""
        self._student = [student]
        self._step = int(step)
        if step == 0:
            if self.checkpoint:
                load_model_weights(self.model, self.checkpoint)
            else:
                for q, p in zip(self.model.parameters(), student.parameters()):
                    q.copy_(p.detach())
        return 0.0

    @property
    def uses_student(self) -> bool:
        return self._step >= self.switch_step

    def set_pseudo_label_mode(self) -> None:
        _pseudo_label_modes(self.model, self.bn_mode)

    @contextlib.contextmanager
    def pseudo_label_model(self) -> Iterator[nn.Module]:
        """The labelling network of this step in pseudo-label mode (the student's modes restored after)."""
        if not self.uses_student:
            self.set_pseudo_label_mode()
            yield self.model
            return
        student = self._student[0]
        modes = [(m, m.training) for m in student.modules()]
        _pseudo_label_modes(student, self.bn_mode)
        try:
            yield student
        finally:
            for m, training in modes:
                m.training = training

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Softmax probabilities (B,C,H,W) of the labelling network at the input size (image interface)."""
        with self.pseudo_label_model() as model:
            logits = model.predict(x)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.softmax(logits.float(), dim=1)

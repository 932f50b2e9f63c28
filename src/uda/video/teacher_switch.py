"""The video reference's pseudo-labeller: a frozen pre-trained model first, then the student itself.

Source: udass.md §2.5(c) and §2.7 ("teacher switch"), video_uda.md §3.4: the UDASS video scripts produce
the TPS pseudo-labels with a frozen TPS model (``tps_{viper,syn}2city_pretrained.pth``, a CNN ACCEL-DeepLabv2,
also for the ViT student) for the first 8000 (CNN) / 4000 (ViT) iterations, then with the current student
under no_grad (no EMA). TPS itself uses the student from the start (``switch_step=0``).

An option next to the default EMA teacher (src/uda/teacher.py): ``uda/teacher=switch``.

- ``model``: the frozen model's own architecture, a model config node (``uda/teacher/model=<name>``,
  conf/uda/teacher/model/, built by Hydra like ``model``): a CNN teacher for a ViT student, as the reference.
  ``None``: a copy of the student's architecture. Its classes must be the student's (one-line error).
- ``checkpoint``: the frozen model's weights, read at step 0 of a fresh run (a resumed run gets the frozen
  model back from its own checkpoint, and a module rebuilt for evaluation does not need the file):

  * a checkpoint of this library: its ``student.*`` weights (``checkpoint_part: student``, e.g. the
    ``last.ckpt`` of a source-only or TPS run) or its teacher's ``teacher.model.*`` (``checkpoint_part:
    teacher``); its stored config is checked like any checkpoint's (src/utils/safe_load.py) and names the
    model it was trained with, so a mismatch says which ``uda/teacher/model`` to use;
  * an imported TPS checkpoint (``tps_viper2city_pretrained.pth`` layout, src/models/tps_checkpoint.py) with
    ``uda/teacher/model=tps_accel_deeplabv2_r101``;
  * a plain state dict in our names.

  A two-frame model may load image weights without the fusion layer (it keeps its [I | 0] initialisation, like
  the reference's ``strict=False``). ``None``: the frozen model is the student's initial weights (only with
  ``model: None``).
- ``input_norm``: the input the frozen model expects: ``imagenet`` (ours) or ``caffe_bgr`` (ADVENT / TPS: BGR,
  0-255, minus the Caffe mean); our ImageNet-normalised batches are converted for it. The student, once it
  labels, reads the batches as they are.
- Pseudo-label mode: Dropout / DropPath in eval; BatchNorm of the frozen model in eval (``frozen_bn_mode``,
  the reference's ``model_tps`` is in eval mode, udass.md §2.5c: its running statistics stay those of the
  checkpoint), of the student in train (``bn_mode="train"``, the reference labels with its train-mode student)
  or eval; when the student is the teacher its modes are restored afterwards.
- ``after_switch`` (ours, not in the references): ``student`` (the references) or ``ema``: from the switch on
  a mean teacher labels, the student's copy at the switch step averaged at ``alpha`` at every later step
  (src/uda/teacher.py's rule without the ramp), as the image methods' teacher (daformer_mic.md §1.4).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from src.models.tps_checkpoint import INPUT_NORMS, caffe_bgr_from_imagenet, is_tps_layout, tps_to_ours
from src.uda.teacher import _is_dropout, average_into
from src.utils.phases import as_step
from src.utils.safe_load import check_checkpoint_config, checkpoint_config, load_weights_file

CHECKPOINT_PARTS = ("student", "teacher")
AFTER_SWITCH = ("student", "ema")
_PREFIX = {"student": "student.", "teacher": "teacher.model."}


def _pseudo_label_modes(model: nn.Module, bn_mode: str) -> None:
    model.train()
    for m in model.modules():
        if _is_dropout(m):
            m.eval()
        elif isinstance(m, _BatchNorm):
            m.train(bn_mode == "train")


def _num_classes(state: dict[str, Tensor]) -> int | None:
    """The classes a state dict predicts: rows of the fusion layer, else of the last head conv."""
    w = state.get("sf_layer.weight")
    if w is not None:
        return int(w.shape[0])
    heads = [k for k in state if k.startswith("head.") and k.endswith(".weight") and state[k].dim() == 4]
    return int(state[heads[-1]].shape[0]) if heads else None


def _trained_model(cfg: Any, part: str) -> str | None:
    """The model name a library checkpoint's config trained for ``part`` (student / teacher)."""
    if not isinstance(cfg, dict):
        return None
    teacher_model = ((cfg.get("uda") or {}).get("teacher") or {}).get("model")
    if part == "teacher" and isinstance(teacher_model, dict):
        return teacher_model.get("name")
    return (cfg.get("model") or {}).get("name")


def read_teacher_state(
    path: str | Path, *, part: str = "student", input_norm: str = "imagenet", model_name: str = "?"
) -> dict[str, Tensor]:
    """The frozen model's state dict of ``uda.teacher.checkpoint`` (module docstring), in our names."""
    path = Path(path)
    key = f"uda.teacher.checkpoint={path}"
    if not path.is_file():
        raise FileNotFoundError(
            f"{key} does not exist: give the checkpoint of a trained run (e.g. <run dir>/checkpoints/"
            f"last.ckpt), a TPS checkpoint (tps_viper2city_pretrained.pth) or null to freeze the initial "
            f"weights"
        )
    ckpt = load_weights_file(path, "uda.teacher.checkpoint=", expected="a trained run's .ckpt or state dict")
    cfg = checkpoint_config(ckpt)
    if cfg is not None:  # only its tensors are read, but an edited library checkpoint is refused everywhere
        check_checkpoint_config(cfg, path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{key} holds no state dict")
    state = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if any(k.startswith("student.") for k in state):  # a checkpoint of this library
        prefix = _PREFIX[part]
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not picked:
            raise ValueError(
                f"{key} holds no {part} ({prefix}* tensors): use uda.teacher.checkpoint_part=student"
            )
        trained = _trained_model(cfg, part)
        if trained and model_name not in ("?", trained):
            raise ValueError(
                f"{key}: its {part} is a {trained}, the frozen teacher a {model_name}: choose the teacher's "
                f"model config (uda/teacher/model=<name>, conf/uda/teacher/model/) with "
                f"uda.teacher.model.name={trained}, or give a checkpoint of a {model_name}"
            )
        state = picked
    elif is_tps_layout(state):
        if input_norm != "caffe_bgr":
            raise ValueError(
                f"{key} is a TPS checkpoint (BGR Caffe-mean input): use "
                f"uda/teacher/model=tps_accel_deeplabv2_r101 (uda.teacher.input_norm=caffe_bgr)"
            )
        state, unknown = tps_to_ours(state)
        if unknown:
            raise ValueError(
                f"{key}: {len(unknown)} tensors of the TPS layout have no counterpart in the TPS "
                f"ACCEL-DeepLabv2 (e.g. {unknown[:3]}): not a tps_*2city_pretrained.pth checkpoint"
            )
    return state


def load_model_weights(
    model: nn.Module,
    path: str | Path,
    *,
    part: str = "student",
    input_norm: str = "imagenet",
    model_name: str = "?",
    num_classes: int | None = None,
) -> None:
    """Read ``path`` (:func:`read_teacher_state`: a library checkpoint's ``part``, a TPS checkpoint or a plain
    state dict) and load it into the frozen ``model`` (:func:`load_state`)."""
    state = read_teacher_state(path, part=part, input_norm=input_norm, model_name=model_name)
    load_state(model, state, path, num_classes)


def load_state(model: nn.Module, state: dict[str, Tensor], path: str | Path, num_classes: int | None) -> None:
    """Load the frozen model's ``state`` (of ``path``); only the fusion layer (``sf_layer``, kept at [I | 0])
    and BN's ``num_batches_tracked`` may be missing, anything else missing, unexpected or reshaped is an
    error, and so is a checkpoint of other classes."""
    key = f"uda.teacher.checkpoint={path}"
    n = _num_classes(state)
    if n is not None and num_classes is not None and n != num_classes:
        raise ValueError(
            f"{key} predicts {n} classes, the student {num_classes} (data.num_classes): the teacher must "
            f"label the student's classes"
        )
    ours = model.state_dict()
    reshaped = [k for k in ours.keys() & state.keys() if tuple(ours[k].shape) != tuple(state[k].shape)]
    if reshaped:
        k = sorted(reshaped)[0]
        raise ValueError(
            f"{key} does not fit the teacher's model: {len(reshaped)} tensors of another shape (e.g. {k}: "
            f"{tuple(state[k].shape)} in the file, {tuple(ours[k].shape)} here): set uda/teacher/model to "
            f"the checkpoint's model"
        )
    result = model.load_state_dict(state, strict=False)
    missing = [
        k for k in result.missing_keys if not (k.startswith("sf_layer.") or k.endswith("num_batches_tracked"))
    ]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{key} does not fit the teacher's model: {len(missing)} missing tensors (e.g. {missing[:2]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]}); it must come "
            f"from a run with the teacher's model (uda/teacher/model)"
        )


class InputAdapted:
    """A two-frame model called on our ImageNet-normalised inputs, converted to the ``input_norm`` it expects
    (``forward_clip``, ``predict_clip``, ``predict``; ``ClipPredictor`` and the training step use these)."""

    def __init__(self, model: nn.Module, input_norm: str) -> None:
        self.model, self.input_norm = model, input_norm

    def _x(self, x: Tensor) -> Tensor:
        return caffe_bgr_from_imagenet(x) if self.input_norm == "caffe_bgr" else x

    def forward_clip(self, x: Tensor, x_prev: Tensor, flow: Tensor, **kw: Any):
        return self.model.forward_clip(self._x(x), self._x(x_prev), flow, **kw)

    def predict_clip(self, x: Tensor, x_prev: Tensor, flow: Tensor, **kw: Any) -> Tensor:
        return self.model.predict_clip(self._x(x), self._x(x_prev), flow, **kw)

    def predict(self, x: Tensor) -> Tensor:
        return self.model.predict(self._x(x))


class SwitchTeacher(nn.Module):
    """Frozen model for ``step < switch_step``, then the student itself (udass.md §2.5c).

    The interface of :class:`src.uda.teacher.EMATeacher` (``update``, ``predict``, ``model``,
    ``set_pseudo_label_mode``) plus :meth:`pseudo_label_model` (the network that labels this step, called on
    our inputs), :meth:`clip_logits` (its two-frame outputs) and :meth:`eval_model` (the frozen model on our
    inputs, for the teacher's validation).
    """

    def __init__(
        self,
        *,
        student: nn.Module,
        switch_step: int = 8000,
        checkpoint: str | None = None,
        bn_mode: str = "train",
        model: Mapping | nn.Module | None = None,
        frozen_bn_mode: str = "eval",
        checkpoint_part: str = "student",
        input_norm: str = "imagenet",
        after_switch: str = "student",
        alpha: float = 0.999,
    ) -> None:
        super().__init__()
        if after_switch not in AFTER_SWITCH:
            raise ValueError(f"uda.teacher.after_switch must be one of {AFTER_SWITCH}, got {after_switch!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"uda.teacher.alpha must be in [0, 1], got {alpha}")
        for key, mode in (("bn_mode", bn_mode), ("frozen_bn_mode", frozen_bn_mode)):
            if mode not in ("train", "eval"):
                raise ValueError(f"uda.teacher.{key} must be 'train' or 'eval', got {mode!r}")
        if switch_step < 0:
            raise ValueError(f"uda.teacher.switch_step must be >= 0, got {switch_step}")
        if checkpoint_part not in CHECKPOINT_PARTS:
            raise ValueError(
                f"uda.teacher.checkpoint_part must be one of {CHECKPOINT_PARTS}, got {checkpoint_part!r}"
            )
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"uda.teacher.input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        student_classes = getattr(student, "num_classes", None)
        self.own_model = model is not None
        self.model_name = "?"
        if isinstance(model, (Mapping, DictConfig)):  # a model config node (switch.yaml: _recursive_: false)
            node = (
                OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else dict(model)
            )
            if not node.get("_target_"):
                raise ValueError(
                    "uda.teacher.model must be a model config with a _target_ (uda/teacher/model=<name>)"
                )
            self.model_name = str(node.get("name") or "?")
            model = instantiate(OmegaConf.create(node))
        if model is None:
            if input_norm != "imagenet":
                raise ValueError(
                    f"uda.teacher.input_norm={input_norm} is for a teacher of its own model "
                    f"(uda/teacher/model=...); a copy of the student reads the student's inputs (imagenet)"
                )
            model = copy.deepcopy(student)
        else:
            if not isinstance(model, nn.Module):
                raise ValueError(
                    f"uda.teacher.model must be a model config (uda/teacher/model=<name>), got "
                    f"{type(model).__name__}"
                )
            teacher_classes = getattr(model, "num_classes", None)
            if student_classes is not None and teacher_classes != student_classes:
                raise ValueError(
                    f"uda.teacher.model predicts {teacher_classes} classes, the student {student_classes} "
                    f"(data.num_classes): the teacher must label the student's classes"
                )
            if not checkpoint:
                raise ValueError(
                    "uda.teacher.model is set but uda.teacher.checkpoint is null: a teacher of its own model "
                    "needs its trained weights (uda.teacher.checkpoint=<file>), or drop uda/teacher/model"
                )
        self.model = model
        self.model.requires_grad_(False)
        self.switch_step = as_step(switch_step, "switch_step")
        self.checkpoint = checkpoint
        self.checkpoint_part = checkpoint_part
        self.input_norm = input_norm
        self.bn_mode = bn_mode
        self.frozen_bn_mode = frozen_bn_mode
        self.num_classes = (
            student_classes if student_classes is not None else getattr(model, "num_classes", None)
        )
        self._student: list[nn.Module] = [student]  # a plain reference: not a submodule, not in state_dict
        self._step = 0
        self.after_switch = after_switch
        self.alpha = float(alpha)
        #: after_switch="ema" (ours): the mean teacher of the student from the switch on, saved in checkpoints
        self.ema: nn.Module | None = None
        if after_switch == "ema":
            self.ema = copy.deepcopy(student)
            self.ema.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Called at the start of every step: remembers the step and the student; step 0 sets the frozen
        model (the checkpoint, or a copy of the student's initial weights). Returns 0 (no averaging); with
        ``after_switch="ema"`` the switch step copies the student into the mean teacher and every later step
        averages it at ``alpha`` (the α used is returned)."""
        self._student = [student]
        self._step = int(step)
        if step == 0:
            if self.checkpoint:
                load_model_weights(
                    self.model, self.checkpoint, part=self.checkpoint_part, input_norm=self.input_norm,
                    model_name=self.model_name, num_classes=self.num_classes,
                )  # fmt: skip
            else:  # the student's initial weights and buffers (BatchNorm statistics)
                self.model.load_state_dict(student.state_dict())
        if self.ema is not None and step >= self.switch_step:
            return self._update_ema(student, step)
        return 0.0

    def _update_ema(self, student: nn.Module, step: int) -> float:
        if step == self.switch_step:  # the mean teacher starts as the student of the switch (buffers too)
            self.ema.load_state_dict(student.state_dict())
            return 0.0
        average_into(self.ema, student, self.alpha)
        return self.alpha

    @property
    def uses_student(self) -> bool:
        return self._step >= self.switch_step

    def set_pseudo_label_mode(self) -> None:
        _pseudo_label_modes(self.model, self.frozen_bn_mode)

    def eval_model(self) -> InputAdapted:
        """The frozen model, called on our inputs (the teacher row of validation)."""
        return InputAdapted(self.model, self.input_norm)

    @contextlib.contextmanager
    def pseudo_label_model(self) -> Iterator[InputAdapted]:
        """The labelling network of this step in pseudo-label mode, called on our inputs (the student's modes
        restored after)."""
        if not self.uses_student:
            self.set_pseudo_label_mode()
            yield InputAdapted(self.model, self.input_norm)
            return
        if self.ema is not None:
            _pseudo_label_modes(self.ema, self.bn_mode)
            yield InputAdapted(self.ema, "imagenet")
            return
        student = self._student[0]
        modes = [(m, m.training) for m in student.modules()]
        _pseudo_label_modes(student, self.bn_mode)
        try:
            yield InputAdapted(student, "imagenet")
        finally:
            for m, training in modes:
                m.training = training

    @torch.no_grad()
    def clip_logits(self, x: Tensor, x_prev: Tensor, flow: Tensor):
        """The two-frame outputs (``ClipLogits``) of this step's labelling network on (x, x_prev, flow)."""
        with self.pseudo_label_model() as model:
            return model.forward_clip(x, x_prev, flow)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Softmax probabilities (B,C,H,W) of the labelling network at the input size (image interface)."""
        with self.pseudo_label_model() as model:
            logits = model.predict(x)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.softmax(logits.float(), dim=1)

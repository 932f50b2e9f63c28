"""``model.init_from=<file>``: start a training run from a whole trained segmentor (issue 19).

The file is a checkpoint of this library (``<run>/checkpoints/*.ckpt``, or one written by
``scripts/import_checkpoint.py``) or a released DAFormer / HRDA / MIC ``.pth`` (mmseg 0.16 layout,
``src/models/released.py``). Loaded into the run's module, by name and shape, all or nothing:

* the **student** (our ``student.*``; mmseg ``model.*``), always;
* the **EMA teacher** (``teacher.model.*``; ``ema_model.*``) when the file holds one and the run has an EMA
  teacher. The teacher then keeps averaging at ``uda.teacher.alpha`` from the first step
  (``EMATeacher.warm_start``): no copy of the student at step 0 and no α ramp, which would overwrite it (the
  reference, whose ``load_from`` is followed by ``_init_ema_weights`` at iteration 0, discards it). A file
  without a teacher: the teacher starts as the student, as in any run;
* the frozen **ImageNet encoder** of the feature distance (``fd.encoder.*``; ``imnet_model.backbone.*``) when
  the file holds one and the run has a feature distance; else it keeps the weights of ``model.pretrained``.

Not loaded: the optimizer, the schedule, the step (the run starts at step 0 with its own schedule) and any
other strategy state. ``src.train ckpt_path=...`` resumes a run instead, exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from src.models.released import is_mmseg_layout, split_uda_state, to_our_segmentor
from src.utils.safe_load import load_weights_file

__all__ = ["SegmentorWeights", "read_segmentor_weights", "load_exactly", "init_from"]

log = logging.getLogger(__name__)

_OURS = {"student": "student.", "teacher": "teacher.model.", "fd_encoder": "fd.encoder."}


@dataclass
class SegmentorWeights:
    """The segmentors of a checkpoint file, in our names (``Segmentor`` / ``HRDASegmentor`` keys)."""

    student: dict[str, Tensor]
    teacher: dict[str, Tensor] | None = None
    fd_encoder: dict[str, Tensor] | None = None  # backbone keys
    layout: str = "ours"  # "ours" | "mmseg"
    ignored: list[str] = field(default_factory=list)
    checkpoint: dict = field(default_factory=dict, repr=False)  # the whole file (config, metadata)


def _load(path: Path, *, what: str, trust: bool) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: {path} does not exist; pass a checkpoint of this library (<run dir>/checkpoints/"
            f"last.ckpt, or one written by scripts/import_checkpoint.py) or a released DAFormer / HRDA / MIC "
            f".pth"
        )
    if not trust:  # tensors and plain data only; one line naming the file when it is anything else
        obj = load_weights_file(path, f"{what}: ", expected="a checkpoint of this library or a released .pth")
    else:  # scripts/import_checkpoint.py --trust: the user vouches for the file
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - one readable message
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ValueError(
                f"{what}: {path} is not a loadable checkpoint ({type(e).__name__}: {first})"
            ) from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what}: {path} holds a {type(obj).__name__}, not a checkpoint dict")
    return dict(obj)


def read_segmentor_weights(path: str | Path, *, what: str = "model.init_from", trust: bool = False):
    """Student / teacher / ImageNet-encoder state dicts of a checkpoint file, in our names.

    ``trust=True`` unpickles arbitrary objects (``weights_only=False``): only for files from a trusted source
    whose metadata holds more than plain data.
    """
    path = Path(path).expanduser()
    ckpt = _load(path, what=what, trust=trust)
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, Mapping):
        raise ValueError(f"{what}: {path} holds no state dict")
    state = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if any(k.startswith("student.") for k in state):
        parts = {
            name: {k[len(p) :]: v for k, v in state.items() if k.startswith(p)} for name, p in _OURS.items()
        }
        ignored = sorted(k for k in state if not k.startswith(tuple(_OURS.values())))
        return SegmentorWeights(
            student=parts["student"],
            teacher=parts["teacher"] or None,
            fd_encoder=parts["fd_encoder"] or None,
            layout="ours",
            ignored=ignored,
            checkpoint=ckpt,
        )
    if is_mmseg_layout(state):
        mm, ignored = split_uda_state(state)
        student, unknown = to_our_segmentor(mm.get("model", {}))
        teacher = None
        if "ema_model" in mm:
            teacher, unknown_t = to_our_segmentor(mm["ema_model"])
            unknown += [f"ema_model.{k}" for k in unknown_t]
        imnet = mm.get("imnet_model") or {}
        encoder = {k[len("backbone.") :]: v for k, v in imnet.items() if k.startswith("backbone.")}
        ignored += [f"model.{k}" for k in unknown]
        ignored += [f"imnet_model.{k}" for k in imnet if not k.startswith("backbone.")]
        return SegmentorWeights(
            student=student,
            teacher=teacher,
            fd_encoder=encoder or None,
            layout="mmseg",
            ignored=sorted(ignored),
            checkpoint=ckpt,
        )
    raise ValueError(
        f"{what}: {path} holds neither a checkpoint of this library (student.*) nor a DAFormer / HRDA / MIC "
        f"checkpoint (model.backbone.*; keys e.g. {list(state)[:3]})"
    )


def load_exactly(module: nn.Module, state: Mapping[str, Tensor], *, what: str) -> None:
    """``module.load_state_dict(state)`` when every key and shape matches; else one line naming the first
    missing, unexpected and reshaped key."""
    ours = module.state_dict()
    missing = sorted(ours.keys() - state.keys())
    unexpected = sorted(state.keys() - ours.keys())
    reshaped = sorted(k for k in ours.keys() & state.keys() if tuple(ours[k].shape) != tuple(state[k].shape))
    if missing or unexpected or reshaped:
        detail = []
        if missing:
            detail.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if reshaped:
            k = reshaped[0]
            detail.append(
                f"{len(reshaped)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                f"{tuple(ours[k].shape)} here)"
            )
        raise ValueError(
            f"{what} does not fit the model of this run ({'; '.join(detail)}): use the model of the file "
            f"(model=..., model.head_channels, data.num_classes)"
        )
    module.load_state_dict(state, strict=True)


def init_from(module: nn.Module, path: str | Path) -> SegmentorWeights:
    """Load the student, the EMA teacher and the ImageNet encoder of a file into a UDA module (docstring)."""
    what = f"model.init_from={path}"
    w = read_segmentor_weights(path, what=what)
    load_exactly(module.student, w.student, what=f"{what}: its student")
    loaded = ["student"]
    teacher = getattr(module, "teacher", None)
    if w.teacher is not None and hasattr(teacher, "warm_start"):
        load_exactly(teacher.model, w.teacher, what=f"{what}: its EMA teacher")
        teacher.warm_start = True
        loaded.append("EMA teacher (averaging at alpha from step 0)")
    elif teacher is not None:
        why = "the file holds no EMA teacher" if w.teacher is None else "this run's teacher is not an EMA"
        log.info("%s: %s; the teacher starts as the student", what, why)
    encoder = getattr(getattr(module, "fd", None), "encoder", None)
    if w.fd_encoder is not None and isinstance(encoder, nn.Module):
        load_exactly(encoder, w.fd_encoder, what=f"{what}: its ImageNet encoder")
        loaded.append("ImageNet (feature distance) encoder")
    log.info("%s: loaded the %s (%s layout); optimizer, schedule and step start afresh", what,
             ", ".join(loaded), w.layout)  # fmt: skip
    return w

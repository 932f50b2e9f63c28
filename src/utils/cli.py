"""One readable message for bad input at the command line (issue 9, "Bad input").

Hydra already turns a wrong experiment name or a misspelt key into one message without a traceback
(config composition errors). What goes wrong *inside* a run because of what the user passed (a missing or
foreign checkpoint, a missing input folder, an invalid strategy value) surfaces as `FileNotFoundError` (or
another `OSError`), `ValueError`, a Hydra instantiation error or a missing mandatory value;
`readable_errors` prints those as one line `error: ...` on stderr and exits with status 1, instead of
Hydra's traceback; so does a run stopped by what it was given (`RunStopped`, e.g. a non-finite loss,
whose message carries the advice). Other exceptions (bugs) keep their traceback. `HYDRA_FULL_ERROR=1`
re-raises everything (full traceback), and so does a multirun, where Hydra's own per-job error handling
applies.

`check_resume_checkpoint` verifies a `ckpt_path=` given to `src.train` before Lightning loads it: a missing
file, a file that is not a checkpoint, a checkpoint of another model / method, or one without training state
(an imported checkpoint: `model.init_from=` starts from it) each give one message
naming what the checkpoint holds and what the run builds (Lightning would print a strict-loading error
listing hundreds of keys).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue

from src.data.errors import DataError, worker_message
from src.utils.safe_load import check_checkpoint_config, checkpoint_config, load_weights_file

F = TypeVar("F", bound=Callable[..., Any])


class RunStopped(RuntimeError):
    """A run stopped by what it was given, not by a bug (e.g. a non-finite loss: `NonFiniteLossError`); its
    message says what to change. `readable_errors` prints it as one line."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # FileNotFoundError, unreadable image files, permissions
    ValueError,
    MissingMandatoryValue,
    InstantiationException,
    RunStopped,
)


def _data_error(e: BaseException) -> BaseException | None:
    """The library's DataError behind `e` (itself, or a cause: Hydra and OmegaConf wrap what a resolver or
    a target raises), so that its own one-line message is printed."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, DataError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _user_cause(e: BaseException) -> BaseException | None:
    """The user error (not itself a wrapper) that Hydra's instantiation error `e` was raised from, or None
    (a bug inside the call keeps Hydra's message)."""
    seen: set[int] = set()
    cause = e.__cause__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, USER_ERRORS) and not isinstance(cause, InstantiationException):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


def one_line(e: BaseException) -> str:
    """The message of a user error on one line (a wrapper's: the message of the user error it wraps; a
    data-loader worker's error: its original message)."""
    if _data_error(e) is None:
        cause = _user_cause(e) if isinstance(e, InstantiationException) else None
        if cause is not None:  # Hydra's "Error in call to target ...: ValueError(...)": the user error itself
            m = re.search(r"^full_key: (\S+)", str(e), flags=re.MULTILINE)
            return f"{m.group(1)}: {one_line(cause)}" if m else one_line(cause)
    if isinstance(e, MissingMandatoryValue):
        key = getattr(e, "full_key", None) or str(e).splitlines()[0].rsplit(" ", 1)[-1]
        return f"{key} is required: pass {key}=<value> on the command line"
    text = str(_data_error(e) or e)
    text = worker_message(text) or text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines) or type(e).__name__


def _multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - outside a Hydra run
        return False


def readable_errors(task: F) -> F:
    """Decorator for a Hydra task function: user errors -> `error: <message>` on stderr, exit status 1."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except USER_ERRORS as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or _multirun():
                raise
            print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]


def _describe(cfg: dict | None) -> str:
    cfg = cfg or {}
    model = (cfg.get("model") or {}).get("name", "?")
    uda = (cfg.get("uda") or {}).get("name", "?")
    data = (cfg.get("data") or {}).get("name", "?")
    return f"model={model} uda={uda} data={data}"


def check_resume_checkpoint(path: str | Path, module: torch.nn.Module) -> None:
    """One readable error unless `path` is a checkpoint whose tensors fit `module` (same keys and shapes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; ckpt_path must name a .ckpt file written by src.train "
            f"(e.g. <run dir>/checkpoints/last.ckpt)"
        )
    ckpt = load_weights_file(path, "ckpt_path=", mmap=True, expected="a .ckpt written by src.train")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path} holds no state_dict: not a training checkpoint of this library")
    their_cfg = checkpoint_config(ckpt)
    if their_cfg is not None:  # a tampered config is refused here too, although resuming builds none of it
        check_checkpoint_config(their_cfg, path)
    theirs = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)}
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    missing = sorted(ours.keys() - theirs.keys())
    unexpected = sorted(theirs.keys() - ours.keys())
    reshaped = sorted(k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k])
    if not (missing or unexpected or reshaped):
        if "optimizer_states" not in ckpt:
            raise ValueError(
                f"checkpoint {path} holds weights but no training state (optimizer, step: e.g. one written "
                f"by scripts/import_checkpoint.py), so it cannot be resumed: start a run from its weights "
                f"with model.init_from={path} instead of ckpt_path"
            )
        return
    our_cfg = getattr(module, "cfg", None)
    held = _describe(their_cfg) if isinstance(their_cfg, dict) else "an unknown configuration"
    built = _describe(our_cfg) if isinstance(our_cfg, dict) else "another model"
    detail = []
    if missing:
        detail.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        detail.append(
            f"{len(reshaped)} of another shape (e.g. {k}: {theirs[k]} in the checkpoint, {ours[k]} here)"
        )
    raise ValueError(
        f"checkpoint {path} does not fit this run: it holds {held}, this run builds {built} "
        f"({'; '.join(detail)}). Resume with the checkpoint's settings (e.g. its experiment=...), "
        f"or drop ckpt_path to start a fresh run"
    )

"""Start-up checks of the settings a run is given, before anything is built (issue 16, "Bad input").

:func:`check_settings` checks the type and range of the few numeric keys whose wrong value would otherwise
surface deep inside Lightning or a data loader with a message that does not name the key
(``trainer.max_steps=abc``, ``data.crop_size=[-5,64]``): one ``ValueError`` naming the key, the value and
what is expected (printed as one ``error:`` line by :func:`src.utils.cli.readable_errors`). A key the
config does not hold is not checked (``src.eval`` has no ``trainer.max_steps``).

:func:`warn_settings` logs one warning for a valid setting that is silently not the reference protocol: an
HRDA model on full-resolution data (``data=*_hr``) evaluated on whole images (``eval.mode=whole``) instead
of HRDA's 1024 / 512 sliding window (conf/experiment/hrda_real_base.yaml).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

log = logging.getLogger(__name__)

_ABSENT = object()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and v >= low


def _size(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) and x >= 1 for x in v)


#: key -> (accepts the value, what is expected, `null` accepted: the key's default is null)
RULES: dict[str, tuple[Callable[[Any], bool], str, bool]] = {
    "trainer.max_steps": (_int_at_least(1), "an integer >= 1 (the number of training steps)", False),
    "trainer.val_check_interval": (_int_at_least(1), "an integer >= 1 (steps between validations)", False),
    "trainer.log_every_n_steps": (_int_at_least(1), "an integer >= 1 (steps between logged rows)", False),
    "data.crop_size": (_size, "[height, width], two integers >= 1 (the training crop in pixels)", False),
    "data.batch_size": (_int_at_least(1), "an integer >= 1 (crops per domain a step)", False),
    "data.val_batch_size": (_int_at_least(1), "an integer >= 1 (validation images a batch)", False),
    "data.num_workers": (_int_at_least(0), "an integer >= 0 (data loader processes)", False),
    "optim.lr": (lambda v: _is_number(v) and v > 0, "a finite number > 0 (e.g. 6e-5)", False),
    "optim.weight_decay": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0", False),
    "optim.warmup_steps": (
        lambda v: _int_at_least(0)(v) or (isinstance(v, float) and 0.0 <= v <= 1.0),
        "an integer >= 0 (linear warm-up steps) or a float in [0, 1] (a fraction of trainer.max_steps)",
        False,
    ),
    "seed": (_is_int, "an integer", False),
    "eval.crop_size": (_size, "null or [height, width], two integers >= 1 (the sliding window)", True),
    "eval.stride": (_size, "null or [height, width], two integers >= 1 (the sliding window's stride)", True),
}


def _shown(v: Any) -> str:
    if OmegaConf.is_config(v):
        v = OmegaConf.to_container(v, resolve=True)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_shown(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else str(v)


def check_settings(cfg: DictConfig) -> None:
    """One ``ValueError`` naming the first key of :data:`RULES` whose value has the wrong type or range."""
    for key, (ok, expected, nullable) in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
        except MissingMandatoryValue:  # `???`: reported as "<key> is required" where it is used
            continue
        if value is _ABSENT or (value is None and nullable):
            continue
        plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        if not ok(plain):
            raise ValueError(f"{key}={_shown(plain)}: expected {expected}")


def warn_settings(cfg: DictConfig) -> list[str]:
    """Log (and return) one warning per valid setting that silently departs from the reference protocol."""
    warnings = []
    model = str(OmegaConf.select(cfg, "model.name", default="") or "")
    data = str(OmegaConf.select(cfg, "data.name", default="") or "")
    mode = OmegaConf.select(cfg, "eval.mode", default="whole") or "whole"
    if model.startswith("hrda_") and data.endswith("_hr") and mode == "whole":
        warnings.append(
            f"model={model} on data={data} is evaluated with eval.mode=whole, not HRDA's protocol (sliding "
            f"1024x1024 windows at stride 512 over the full-resolution images); add eval.mode=slide "
            f"eval.crop_size=[1024,1024] eval.stride=[512,512] as the *_hrda_* experiments do "
            f"(conf/experiment/hrda_real_base.yaml)"
        )
    for w in warnings:
        log.warning(w)
    return warnings

"""Phase boundaries of a run, in steps or as a fraction of ``trainer.max_steps`` (issue 15, our design).

The papers give every phase in iterations of a 40k-step run: the lr warm-up (1500, daformer_mic.md §5),
CDM's warm-up (the lr warm-up, omuda.md §4.3), QuadMix's start (6000, udass.md §1.2), TPS's start and the
video teacher switch (udass.md §2.5c). A shorter run keeps those absolute steps unless told otherwise, so a
400-step run of ``uda=udass`` never reaches QuadMix. Each boundary below therefore accepts either

- an **int**: a global step (the real-data experiments keep the papers' values), or
- a **float in [0, 1]**: a fraction of ``trainer.max_steps`` (``uda.mix.quadmix_start=0.15`` = 15 % of the
  run, the papers' 6000 / 40000), rounded to the nearest step — the convention of Lightning's
  ``val_check_interval``.

:func:`resolve_phases` turns fractions into steps once, before the strategies are built (the resolved steps
are what the checkpoint stores), and logs one warning for each phase that starts at or after the last step.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["PHASE_KEYS", "resolve_phases", "phase_step", "as_step"]

#: dotted config key -> what the boundary starts (or ends, for the warm-ups)
PHASE_KEYS: dict[str, str] = {
    "optim.warmup_steps": "the learning-rate warm-up ends",
    "uda.pseudo.warmup_steps": "CDM's warm-up ends (its class-wise weights start)",
    "uda.pseudo.ramp_steps": "CDM's ramp from the host's weight ends (a duration after the warm-up)",
    "uda.mix.quadmix_start": "QuadMix starts",
    "uda.tps_start": "TPS (and the MMD) start",
    "uda.teacher.switch_step": "the teacher switches from the frozen model to the student",
}


def phase_step(value: Any, max_steps: int, key: str) -> int:
    """One boundary as a step: an int as given, a float in [0, 1] times ``max_steps`` (rounded)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"{key} must be a step (int >= 0) or a fraction of trainer.max_steps (float in [0, 1]), "
            f"got {value!r}"
        )
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{key}={value}: a float is a fraction of trainer.max_steps and must lie in [0, 1]; "
                f"give a step as an int (e.g. {key}={int(value)})"
            )
        return int(round(value * max_steps))
    if value < 0:
        raise ValueError(f"{key} must be >= 0, got {value}")
    return int(value)


def as_step(value: Any, name: str) -> int:
    """A boundary a strategy receives, which must already be a step: an unresolved fraction is an error.

    ``int(0.15)`` would silently start a phase at step 0; a strategy built outside :class:`UDAModule` (which
    resolves fractions with :func:`resolve_phases`) gets this one-line error instead.
    """
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(
            f"{name}={value} is a fraction of trainer.max_steps: resolve it with "
            f"src.utils.phases.resolve_phases (UDAModule does) or pass a step (int)"
        )
    return int(value)


def _get(cfg: dict, dotted: str) -> tuple[dict | None, str]:
    *path, last = dotted.split(".")
    node: Any = cfg
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None, last
    return (node if isinstance(node, dict) else None), last


def resolve_phases(cfg: dict, *, warn: bool = True) -> dict:
    """A copy of the resolved config ``cfg`` with every phase boundary of :data:`PHASE_KEYS` in steps.

    Logs one warning per phase that begins at or after ``trainer.max_steps`` (it never happens in this run),
    unless ``warn`` is false. Keys absent from the config are skipped (not every method has every phase).
    """
    out = copy.deepcopy(cfg)
    max_steps = int((out.get("trainer") or {}).get("max_steps") or 0)
    for key, what in PHASE_KEYS.items():
        node, last = _get(out, key)
        if node is None or last not in node or node[last] is None:
            continue
        if key.startswith("uda.pseudo.") and not node.get("_target_"):
            continue
        step = phase_step(node[last], max_steps, key)
        node[last] = step
        if warn and max_steps and step >= max_steps and step > 0:
            log.warning(
                "%s = %d is at or after trainer.max_steps = %d: %s only after this run ends. Give it as a "
                "fraction of the run (a float in [0, 1], e.g. %s=0.15) or a smaller step",
                key, step, max_steps, what, key,
            )  # fmt: skip
    return out

"""OmegaConf resolvers and helpers shared by the entry points."""

from __future__ import annotations

from pathlib import Path

from omegaconf import ListConfig, OmegaConf

from src.data.classes import CITYSCAPES_CLASSES, read_classes_file

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def class_names_of(classes_file: str | None) -> list[str]:
    """data.classes_file -> class names (Cityscapes' 19 when null)."""
    if classes_file in (None, "", "null", "None"):
        return list(CITYSCAPES_CLASSES)
    return list(read_classes_file(classes_file))


def rows_at(rows, at_height, crop_size) -> ListConfig:
    """Pseudo-label crop rows given for a crop ``at_height`` high, scaled to ``crop_size`` (h or (h, w))."""
    h = crop_size if isinstance(crop_size, int) else int(list(crop_size)[0])
    return ListConfig([int(round(int(r) * h / int(at_height))) for r in rows])


def warmup_without(checkpoint, warmup):
    """A phase boundary that depends on a pre-trained teacher: 0 with ``checkpoint`` (the reference schedule),
    ``warmup`` (a step or a fraction of the run, src/utils/phases.py) without one (``uda.teacher.checkpoint``
    null)."""
    return 0 if checkpoint not in (None, "", "null", "None") else warmup


def ema_alpha(window, max_steps) -> float:
    """The mean teacher's alpha whose averaging window 1 / (1 - alpha) is ``window`` of a ``max_steps`` run
    (the papers' 0.999 of 40k steps: 2.5 %), rounded to 4 decimals: 0.96 at 1000 steps, 0.9733 at 1500."""
    if max_steps is None or int(max_steps) <= 0:
        raise ValueError(
            f"uda.teacher.alpha scales with trainer.max_steps, which is {max_steps}: set "
            "trainer.max_steps > 0 or give uda.teacher.alpha a number"
        )
    return round(max(0.0, 1.0 - 1.0 / (float(window) * int(max_steps))), 4)


def register_resolvers() -> None:
    if OmegaConf.has_resolver("udass.root"):
        return
    OmegaConf.register_new_resolver("udass.root", lambda: str(PROJECT_ROOT))
    OmegaConf.register_new_resolver("udass.class_names", lambda f: ListConfig(class_names_of(f)))
    OmegaConf.register_new_resolver("udass.num_classes", lambda f: len(class_names_of(f)))
    OmegaConf.register_new_resolver("udass.rows_at", rows_at)
    OmegaConf.register_new_resolver("udass.warmup_without", warmup_without)
    OmegaConf.register_new_resolver("udass.ema_alpha", ema_alpha)


register_resolvers()

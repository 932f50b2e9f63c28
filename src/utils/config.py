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


def register_resolvers() -> None:
    if OmegaConf.has_resolver("udass.root"):
        return
    OmegaConf.register_new_resolver("udass.root", lambda: str(PROJECT_ROOT))
    OmegaConf.register_new_resolver("udass.class_names", lambda f: ListConfig(class_names_of(f)))
    OmegaConf.register_new_resolver("udass.num_classes", lambda f: len(class_names_of(f)))


register_resolvers()

"""Preparation steps run once before training (LightningDataModule.prepare_data)."""

from __future__ import annotations

import logging
from pathlib import Path

from src.data.rare_class_sampling import compute_class_stats, write_class_stats

log = logging.getLogger(__name__)


def ensure_class_stats(root: str | Path, num_classes: int = 19) -> None:
    """Rare-class statistics of a folder-format split, computed once (scripts/compute_class_stats.py)."""
    root = Path(root)
    if (root / "sample_class_stats.json").is_file():
        return
    files = sorted((root / "labels").glob("*.png"))
    log.info("computing rare-class statistics of %d labels in %s", len(files), root)
    write_class_stats(root, compute_class_stats(files, num_classes=num_classes, root=root, progress=False))


def prepare_synthetic(root: str | Path, **generator_kwargs) -> Path:
    """Generate the synthetic two-domain street scenes (cached) and their rare-class statistics."""
    from src.data.datasets.synthetic import ensure_synthetic_dataset

    root = ensure_synthetic_dataset(Path(root), **generator_kwargs)
    ensure_class_stats(root / "source")
    ensure_class_stats(root / "target")  # the oracle trains on the target split
    return root

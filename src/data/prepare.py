"""Preparation steps run once before training (LightningDataModule.prepare_data)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from src.data.rare_class_sampling import write_class_stats

log = logging.getLogger(__name__)


def ensure_class_stats(root: str | Path, num_classes: int = 19, key: str = "data dir") -> None:
    """Rare-class statistics of a folder-format split: its files checked once (src/data/check.py), the
    statistics written from the checked labels when missing or stale (FolderDataset.ensure_class_stats)."""
    from src.data.datasets.folder import FolderDataset

    FolderDataset(root, key=key).ensure_class_stats(num_classes)


def prepare_synthetic(root: str | Path, **generator_kwargs) -> Path:
    """Generate the synthetic two-domain street scenes (cached) and their rare-class statistics."""
    from src.data.datasets.synthetic import ensure_synthetic_dataset

    root = ensure_synthetic_dataset(Path(root), **generator_kwargs)
    ensure_class_stats(root / "source", key="data.source_dir")
    ensure_class_stats(root / "target", key="data.target_dir")  # the oracle trains on the target split
    return root


def _clip_label_counts(job: tuple) -> dict:
    """Class pixel counts of one clip's current-frame label, read and mapped by its dataset (a worker)."""
    dataset, i, num_classes = job
    lab = dataset.read_label(dataset.label_path(i, 0))
    hist = np.bincount(lab.ravel(), minlength=256)
    return {
        "file": dataset.label_key(i),
        "counts": {int(c): int(hist[c]) for c in range(num_classes) if hist[c]},
    }


def compute_clip_class_stats(
    dataset, num_classes: int, *, workers: int = 1, progress: bool = False
) -> list[dict]:
    """Rare-class statistics of a clip dataset: per clip, the class pixel counts of its *current* frame's
    label in the training protocol (VIPER 15, SYNTHIA-Seq 12, train ids), keyed by ``label_key`` (the label
    path relative to ``stats_root``), as the sampler reads them (daformer_mic.md §1.7)."""
    from tqdm import tqdm

    dataset.current_label_files()  # every clip has a current-frame label (raises otherwise)
    jobs = [(dataset, i, int(num_classes)) for i in range(len(dataset))]
    bar = dict(total=len(jobs), desc=f"{dataset.title} class stats", unit="clip", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            return list(tqdm(pool.imap(_clip_label_counts, jobs, chunksize=16), **bar))
    return [_clip_label_counts(j) for j in tqdm(jobs, **bar)]


def ensure_clip_class_stats(dataset, num_classes: int, *, workers: int = 1) -> Path:
    """``stats_root/sample_class_stats.json`` of a clip dataset, computed once."""
    root = Path(dataset.stats_root)
    if not (root / "sample_class_stats.json").is_file():
        log.info("computing rare-class statistics of %d clips in %s", len(dataset), root)
        write_class_stats(root, compute_clip_class_stats(dataset, num_classes, workers=workers))
    return root


def prepare_synthetic_video(root: str | Path, **generator_kwargs) -> Path:
    """Generate the synthetic two-domain street clips (cached) and the source clips' rare-class statistics."""
    from src.data.datasets.clip_folder import ClipFolderDataset
    from src.data.datasets.synthetic_video import ensure_synthetic_video_dataset

    root = ensure_synthetic_video_dataset(Path(root), **generator_kwargs)
    ensure_clip_class_stats(ClipFolderDataset(root / "source", labels=True, prev_labels=True), 19)
    return root


#: ``scripts/prepare_data.py`` video datasets: (dataset class path, number of classes, class names)
VIDEO_DATASETS: dict[str, tuple[str, int]] = {
    "viper_seq": ("src.data.datasets.viper_seq.ViperSeqDataset", 15),
    "synthia_seq": ("src.data.datasets.synthia_seq.SynthiaSeqDataset", 12),
    "clip_folder": ("src.data.datasets.clip_folder.ClipFolderDataset", 19),
}


def prepare_video(
    dataset: str, root: str | Path, *, workers: int = 1, progress: bool = True, num_classes: int | None = None
) -> dict:
    """Check a labelled source clip dataset (frames t, t−1 and their labels exist) and write the rare-class
    statistics of its current frames into ``stats_root`` (``sample_class_stats.json``,
    ``samples_with_class.json``). Returns a summary dict (clips, per-class pixels, files)."""
    import importlib

    from src.data.classes import CITYSCAPES_CLASSES, SYNTHIA_SEQ12_CLASSES, VIPER15_CLASSES

    path, default_classes = VIDEO_DATASETS[dataset]
    module, cls = path.rsplit(".", 1)
    ds = getattr(importlib.import_module(module), cls)(Path(root), labels=True)
    n = int(num_classes or default_classes)
    ds.verify((0, 1), (0, 1) if ds.prev_labels else (0,))
    stats = compute_clip_class_stats(ds, n, workers=workers, progress=progress)
    files = write_class_stats(ds.stats_root, stats)
    totals = [0] * n
    for s in stats:
        for c, k in s["counts"].items():
            totals[int(c)] += int(k)
    names = {15: VIPER15_CLASSES, 12: SYNTHIA_SEQ12_CLASSES, 19: CITYSCAPES_CLASSES}.get(
        n, tuple(map(str, range(n)))
    )
    return {
        "dataset": dataset,
        "root": str(root),
        "clips": len(ds),
        "class_pixels": dict(zip(names, totals)),
        "files": [str(f) for f in files],
    }

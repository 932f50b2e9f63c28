"""Rare Class Sampling (RCS) for the source domain.

Source: DAFormer ``tools/convert_datasets/*.py`` (class statistics) and ``mmseg/datasets/uda_dataset.py``
(sampling), daformer_mic.md §1.7.

- Statistics are pixel counts per class of the **full-resolution** train-id label PNGs (only classes with
  > 0 pixels are stored per file), written to ``ROOT/sample_class_stats.json`` and
  ``ROOT/samples_with_class.json`` by ``python scripts/compute_class_stats.py ROOT`` (a folder dataset writes
  them itself on first use from its checked labels and the run's classes, and again when the labels change:
  ``FolderDataset.ensure_class_stats``). Our json layout is
  ``[{"file": ..., "counts": {"<class>": n}}, ...]`` and ``{"<class>": [[file, n], ...]}``.
- f_c = N_c / Σ N; P(c) = softmax((1 − f_c) / T) over the classes present in the statistics, T = 0.01.
- One sample: c ~ P, then a file uniformly among those with **> min_pixels** (3000) pixels of c. If no file
  passes (possible for small images or a lowered resolution), we fall back to the file(s) with the most pixels
  of c (the reference would crash on an empty list).
- The dataset retries its random crop up to 10 times until the crop holds > ``min_crop_pixels`` =
  min_pixels · min_crop_ratio pixels of c (0.5 for DAFormer 512 crops, 2.0 for HRDA/MIC 1024 crops).
- min_pixels = 3000 is meant for full-resolution GTA labels; keep it a parameter for other datasets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STATS_FILE = "sample_class_stats.json"
SAMPLES_WITH_CLASS_FILE = "samples_with_class.json"


def _count_one(args: tuple[str, str, int]) -> dict[str, Any]:
    from PIL import Image

    path, name, num_classes = args
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:  # accept an RGB-saved train-id map only when all channels carry the same id
        if not (arr[..., :3] == arr[..., :1]).all():
            raise ValueError(f"{path}: expected a single-channel uint8 train-id PNG, got a colour image")
        arr = arr[..., 0]
    hist = np.bincount(arr.ravel().astype(np.int64), minlength=num_classes)
    counts = {int(c): int(hist[c]) for c in range(num_classes) if hist[c] > 0}
    return {"file": name, "counts": counts}


def compute_class_stats(
    label_files: Sequence[Path | str],
    *,
    num_classes: int = 19,
    num_workers: int = 1,
    root: Path | str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Per-file class pixel counts of train-id label PNGs (ids >= num_classes, e.g. 255, are skipped).

    Each entry is ``{"file": str, "counts": {class_id: n_pixels > 0}}``; ``file`` is the path relative to
    ``root`` when given, else the path as given. ``num_workers > 1`` uses a multiprocessing pool.
    """
    from tqdm import tqdm

    root_p = Path(root) if root is not None else None
    jobs = []
    for f in label_files:
        p = Path(f)
        name = str(p.relative_to(root_p)) if root_p is not None and p.is_relative_to(root_p) else str(f)
        jobs.append((str(p), name, int(num_classes)))
    bar = dict(total=len(jobs), desc="class stats", unit="img", disable=not progress)
    if num_workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(num_workers) as pool:
            return list(tqdm(pool.imap(_count_one, jobs, chunksize=16), **bar))
    return [_count_one(j) for j in tqdm(jobs, **bar)]


def samples_with_class(stats: Iterable[dict[str, Any]]) -> dict[int, list[tuple[str, int]]]:
    """{class: [(file, n_pixels), ...]} over the files that contain the class."""
    out: dict[int, list[tuple[str, int]]] = {}
    for s in stats:
        for c, n in s["counts"].items():
            out.setdefault(int(c), []).append((s["file"], int(n)))
    return dict(sorted(out.items()))


def class_stats_json(stats: list[dict[str, Any]]) -> tuple[str, str]:
    """The texts of ``sample_class_stats.json`` and ``samples_with_class.json`` for ``stats``."""
    serial = [{"file": s["file"], "counts": {str(c): int(n) for c, n in s["counts"].items()}} for s in stats]
    swc = {str(c): [[f, n] for f, n in v] for c, v in samples_with_class(stats).items()}
    return json.dumps(serial), json.dumps(swc)


def write_class_stats(
    root: Path | str, stats: list[dict[str, Any]], *, only_if_changed: bool = False
) -> tuple[Path, Path] | None:
    """Write ``ROOT/sample_class_stats.json`` and ``ROOT/samples_with_class.json`` atomically (a reader never
    sees half a file); returns both paths. ``only_if_changed``: None, and nothing written, when both files
    already hold exactly these statistics."""
    from src.data.check import write_atomic

    root = Path(root)
    p1, p2 = root / STATS_FILE, root / SAMPLES_WITH_CLASS_FILE
    t1, t2 = class_stats_json(stats)
    if only_if_changed:
        try:
            if p1.read_text() == t1 and p2.read_text() == t2:
                return None
        except OSError:
            pass
    write_atomic(p2, t2)
    write_atomic(p1, t1)  # last: its presence means both are complete
    return p1, p2


def _normalise_stats(stats: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"file": str(s["file"]), "counts": {int(c): int(n) for c, n in s["counts"].items() if int(n) > 0}}
        for s in stats
    ]


class RareClassSampler:
    """DAFormer Rare Class Sampling (daformer_mic.md §1.7): c ~ softmax((1 − f_c)/T), then a file with c."""

    def __init__(
        self,
        *,
        stats: list[dict[str, Any]],
        temperature: float = 0.01,
        min_pixels: int = 3000,
        min_crop_ratio: float = 0.5,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.stats = _normalise_stats(stats)
        self.temperature = float(temperature)
        self.min_pixels = int(min_pixels)
        self.min_crop_ratio = float(min_crop_ratio)

        totals: dict[int, int] = {}
        for s in self.stats:
            for c, n in s["counts"].items():
                totals[c] = totals.get(c, 0) + n
        self._classes = tuple(sorted(c for c, n in totals.items() if n > 0))
        if not self._classes:
            raise ValueError("RCS statistics contain no labelled pixel")
        n_c = np.array([totals[c] for c in self._classes], dtype=np.float64)
        freq = n_c / n_c.sum()
        logits = (1.0 - freq) / self.temperature
        e = np.exp(logits - logits.max())
        self._probs = e / e.sum()

        by_class = samples_with_class(self.stats)
        self._files: dict[int, list[str]] = {}
        for c in self._classes:
            entries = by_class[c]
            files = [f for f, n in entries if n > self.min_pixels]
            if not files:  # fallback: the file(s) with the most pixels of c
                best = max(n for _, n in entries)
                files = [f for f, n in entries if n == best]
            self._files[c] = files

    @classmethod
    def from_root(cls, root: Path | str, **kwargs: Any) -> RareClassSampler:
        """Load ``ROOT/sample_class_stats.json`` (FileNotFoundError with the fixing command if missing)."""
        path = Path(root) / STATS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"rare class sampling needs {path}, which does not exist: run "
                f"`python scripts/compute_class_stats.py {root}` to compute the class statistics "
                f"({STATS_FILE} and {SAMPLES_WITH_CLASS_FILE}; a folder dataset writes them at start-up)"
            )
        return cls(stats=json.loads(path.read_text()), **kwargs)

    @property
    def classes(self) -> tuple[int, ...]:
        """Eligible classes (present in the statistics), ascending."""
        return self._classes

    @property
    def probabilities(self) -> np.ndarray:
        """P(c) aligned with :attr:`classes`."""
        return self._probs.copy()

    @property
    def min_crop_pixels(self) -> float:
        """Pixels of the sampled class a crop must exceed (dataset crop retries, up to 10)."""
        return self.min_pixels * self.min_crop_ratio

    def files_for(self, class_id: int) -> list[str]:
        """Files eligible for class ``class_id`` (> min_pixels, or the fallback)."""
        return list(self._files[class_id])

    def sample(self, rng: np.random.Generator) -> tuple[int, str]:
        """Draw (class_id, file): c ~ P, then a file uniformly among the eligible files of c."""
        c = self._classes[int(rng.choice(len(self._classes), p=self._probs))]
        files = self._files[c]
        return c, files[int(rng.integers(len(files)))]

"""Folders written by a procedural generator: atomic writes, manifest checks, never replacing user data.

Shared by the embedded synthetic street scenes (``synthetic.py``) and clips (``synthetic_video.py``). A
generated ROOT holds ``manifest.json`` (``generator``, ``version``, ``params`` and what the generator adds)
and ``classes.txt``. :func:`write_generated` renders into a temporary sibling folder and renames it to ROOT
at the end, so an interrupted run never leaves a half-written ROOT; an existing ROOT is replaced only when
its manifest names the same generator (a typo in ROOT must not delete user data). :func:`check_generated`
says why a ROOT does not hold the dataset of some parameters (None when it does); ``ensure_*`` functions of
the generators regenerate exactly then.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2

from src.data.classes import CITYSCAPES_CLASSES

log = logging.getLogger(__name__)

__all__ = ["split_counts", "refuse_foreign", "write_generated", "check_generated"]


def split_counts(params: dict) -> dict[str, int]:
    """{split: count} of generator parameters with ``num_source`` / ``num_target`` / ``num_val``."""
    return {"source": params["num_source"], "target": params["num_target"], "val": params["num_val"]}


def refuse_foreign(root: Path, generator: str, what: str) -> None:
    """FileExistsError when a non-empty ROOT was not written by ``generator`` (its manifest says so)."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return
    try:
        ours = json.loads((root / "manifest.json").read_text()).get("generator") == generator
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"{root} exists and is not a {what} written by {generator} (no matching manifest.json); "
            f"refusing to replace it. Choose another data.root or delete the folder yourself."
        )


def _render_chunk(render: Callable[[tuple], None], jobs: list[tuple]) -> int:
    cv2.setNumThreads(1)  # one process per core already
    for job in jobs:
        render(job)
    return len(jobs)


def _swap_into_place(tmp: Path, root: Path, is_complete: Callable[[Path], bool], what: str) -> None:
    """Rename tmp to root; an existing root is moved aside first and deleted after the swap."""
    old = None
    if root.exists() or root.is_symlink():
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(root, old)
    try:
        os.replace(tmp, root)
    except OSError:
        if is_complete(root):
            log.info("%s: %s was written concurrently by another process; keeping it", what, root)
        else:
            if old is not None and not root.exists():
                os.replace(old, root)
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_generated(
    root: Path,
    *,
    generator: str,
    version: int,
    params: dict,
    subdirs: Sequence[str],
    jobs: list[tuple],
    render: Callable[[tuple], None],
    manifest: dict[str, Any],
    is_complete: Callable[[Path], bool],
    num_workers: int = 1,
    what: str = "dataset",
) -> Path:
    """Render ``jobs`` (each a tuple whose first element is the output folder, filled in here) into ROOT.

    ``subdirs`` are created under every split folder first; ``render(job)`` (a module-level function, so
    that spawned processes can import it) renders one job, in this process or, with ``num_workers`` > 1, in
    spawned processes (the files are the same for any ``num_workers``). The manifest gets ``generator``,
    ``version``, ``params`` and ``counts`` plus ``manifest``; ``is_complete(root)`` tells whether a
    concurrent writer already left a complete ROOT.
    """
    refuse_foreign(root, generator, what)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    counts = split_counts(params)
    try:
        for split in counts:
            for sub in subdirs:
                (tmp / split / sub).mkdir(parents=True)
        jobs = [(str(tmp), *job[1:]) for job in jobs]
        if num_workers > 1 and len(jobs) > 1:
            n_chunks = min(len(jobs), num_workers * 4)
            chunks = [jobs[i::n_chunks] for i in range(n_chunks)]
            with ProcessPoolExecutor(max_workers=num_workers, mp_context=get_context("spawn")) as ex:
                sum(ex.map(partial(_render_chunk, render), chunks))
        else:
            _render_chunk(render, jobs)
        (tmp / "classes.txt").write_text("\n".join(CITYSCAPES_CLASSES) + "\n")
        full = {"generator": generator, "version": version, "params": params, "counts": counts, **manifest}
        (tmp / "manifest.json").write_text(json.dumps(full, indent=2) + "\n")
        _swap_into_place(tmp, root, is_complete, what)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: wrote %d items to %s in %.1f s", what, len(jobs), root, time.perf_counter() - t0)
    return root


def check_generated(
    root: Path, *, generator: str, version: int, params: dict, files: Iterable[Path]
) -> str | None:
    """None when ROOT holds the dataset of ``generator`` v``version`` for ``params`` with all ``files``."""
    man_path = root / "manifest.json"
    if not man_path.is_file():
        return f"{man_path} does not exist"
    try:
        manifest = json.loads(man_path.read_text())
    except (OSError, ValueError) as e:
        return f"{man_path} is unreadable ({e})"
    if manifest.get("generator") != generator or manifest.get("version") != version:
        return f"generator {manifest.get('generator')} v{manifest.get('version')} != {generator} v{version}"
    old = manifest.get("params", {})
    diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
    if diff:
        return "parameters changed: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
    if not (root / "classes.txt").is_file():
        return "classes.txt is missing"
    for p in files:
        if not p.is_file():
            return f"{p} is missing"
    return None

"""The start-up check of a folder dataset: every image / label pair, once, cached (our design, issue 16).

Without it a corrupt, empty, truncated or mis-sized file is found only when the sampler draws it (maybe
hours into a run; a bad validation file at the first validation), and a label with ids outside the classes
file trains (or fails with "Target 7 is out of bounds") without naming the file.

What is checked, per file, on the first start:

- **images**: the header only (PNG IHDR, JPEG SOF: width and height as stored, i.e. without EXIF
  rotation, which the readers ignore) and the end of the file (PNG's IEND chunk, JPEG's end-of-image marker
  after the first scan), which catches a truncated copy. Another format (a WebP renamed .png) is decoded once.
- **labels**: the PNG header (single-channel greyscale, 8 or 16 bits: a palette or colour PNG, or 1/2/4-bit
  greyscale, which OpenCV would expand to colours or scale to 0..255, is refused), the end, and one full
  decode (labels are small single-channel PNGs), which gives the class pixel counts: a 16-bit label with
  values above 255 is refused, and the counts are kept for the id check below and the rare-class statistics
  (:func:`class_stats`).
- **pairs**: image and label of the same size.
- **ids**: every label id < the number of classes, or 255 (ignore), against the run's classes (checked on
  every start, from the cached counts).

The results are cached in ``<split>/.udass_check.json`` (``CHECK_FILE``), keyed by the file's path
relative to the split, its size and its modification time (ns): a later start stats the files and checks
only new or changed ones. Only files that passed are cached, so a fixed file is checked again. All
problems of a split are reported together in one `DataError` line (the first few, and their number).

`scripts/check_data.py DIR ... --fresh` times a first and a cached check (README "Bring your own data").
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.data.errors import DataError, DataReadError

log = logging.getLogger(__name__)

CHECK_FILE = ".udass_check.json"
CHECK_VERSION = 1
IGNORE_ID = 255
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of a complete PNG
# PNG colour type -> channels as stored (3 = palette: one index channel, which OpenCV expands to BGR)
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); not DHT/JPG/DAC
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Read images as stored: no EXIF rotation (labels carry none; mmcv's `color_ignore_orientation`)
IMREAD_IMAGE = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_TAIL = 4096  # bytes searched for PNG's IEND at the end (a few tools append bytes after it)


# ------------------------------------------------------------------------------------------ headers
def png_header(head: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the first 29 bytes of a PNG; ValueError if not one."""
    if len(head) < 29 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise ValueError("not a PNG file (no PNG signature and IHDR chunk)")
    w, h, depth, color = struct.unpack(">IIBB", head[16:26])
    return w, h, depth, color


def jpeg_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, components, precision) of a complete JPEG (the file's bytes).

    Walks the marker segments up to the first scan; the file must end with an end-of-image marker after
    it (entropy-coded data cannot hold FF D9), or it is truncated. ValueError names what is wrong."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG file (no start-of-image marker)")
    i, n, sof = 2, len(data), None
    while True:
        while i < n and data[i] == 0xFF and i + 1 < n and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        if i + 4 > n or data[i] != 0xFF:
            raise ValueError("truncated or corrupt JPEG (its header segments end early)")
        m = data[i + 1]
        if m == 0xD8 or m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if m in JPEG_SOF:
            if i + 10 > n:
                raise ValueError("truncated JPEG (inside its frame header)")
            precision, h, w, comps = struct.unpack(">BHHB", data[i + 4 : i + 10])
            sof = (w, h, comps, precision)
        if m == 0xDA:  # start of scan
            if sof is None:
                raise ValueError("corrupt JPEG (a scan before the frame header)")
            if data.rfind(b"\xff\xd9") <= i:
                raise ValueError("truncated JPEG (it ends without the end-of-image marker)")
            return sof
        if m == 0xD9:
            raise ValueError("corrupt JPEG (it ends before its first scan)")
        i += 2 + length


def _png_complete(path: Path, size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(max(size - _TAIL, 0))
        tail = f.read()
    return tail.endswith(PNG_IEND) or PNG_IEND in tail


def image_info(path: Path, size: int) -> tuple[int, int]:
    """(width, height) of an image file as the readers decode it, from its header; DataReadError otherwise."""
    if size == 0:
        raise DataReadError(f"image {path} is empty (0 bytes): re-copy it, or delete it and its label", path)
    with open(path, "rb") as f:
        head = f.read(32)
    try:
        if head.startswith(PNG_SIGNATURE):
            w, h, _, _ = png_header(head)
            if not _png_complete(path, size):
                raise ValueError("truncated PNG (it ends without its IEND chunk)")
            return w, h
        if head.startswith(b"\xff\xd8"):
            w, h, _, _ = jpeg_header(path.read_bytes())
            return w, h
    except ValueError as e:
        raise DataReadError(f"image {path}: {e}; re-copy it, or delete it and its label", path) from None
    img = cv2.imread(str(path), IMREAD_IMAGE)  # another format OpenCV reads (WebP, BMP, ...): decode once
    if img is None:
        raise DataReadError(
            f"image {path} is neither a PNG nor a JPEG and cannot be decoded; re-copy it, or delete it and "
            f"its label",
            path,
        )
    return img.shape[1], img.shape[0]


def label_problem(depth: int, color: int) -> str | None:
    """Why a PNG of this bit depth / colour type cannot be a train-id label, or None."""
    if color == 3:
        return (
            "is a palette PNG (OpenCV reads its colours, not its indices); save the train ids as a "
            "single-channel 8-bit greyscale PNG"
        )
    if color != 0:
        return (
            f"has {PNG_CHANNELS.get(color, '?')} channels; labels must be single-channel PNGs of train ids "
            f"(0..C-1, 255 = ignore). Convert colour labels to train ids first."
        )
    if depth < 8:
        return (
            f"is a {depth}-bit PNG (OpenCV scales such values to 0..255); save the train ids as an 8-bit "
            f"greyscale PNG"
        )
    return None


def label_info(path: Path, size: int) -> tuple[int, int, list[list[int]]]:
    """(width, height, [[id, pixels], ...]) of a label file: header, end and one full decode."""
    from src.data.datasets.folder import read_label

    if size == 0:
        raise DataReadError(f"label {path} is empty (0 bytes): re-copy it, or delete it and its image", path)
    with open(path, "rb") as f:
        head = f.read(32)
    try:
        w, h, depth, color = png_header(head)
    except ValueError:
        raise DataError(
            f"label {path} is not a PNG file; labels must be lossless single-channel PNGs of train ids "
            f"(a JPEG changes the ids)",
            path,
        ) from None
    problem = label_problem(depth, color)
    if problem is not None:
        raise DataError(f"label {path} {problem}", path)
    if not _png_complete(path, size):
        raise DataReadError(
            f"label {path} is truncated (it ends without its IEND chunk); re-copy it, or delete it and its "
            f"image",
            path,
        )
    lab = read_label(path)  # decodes; refuses 16-bit values above 255
    hist = np.bincount(lab.ravel(), minlength=256)
    return w, h, [[int(c), int(hist[c])] for c in np.flatnonzero(hist)]


# --------------------------------------------------------------------------------------- the check
def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def load_manifest(root: Path) -> dict[str, Any]:
    path = root / CHECK_FILE
    try:
        man = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"version": CHECK_VERSION, "files": {}}
    if (
        not isinstance(man, dict)
        or man.get("version") != CHECK_VERSION
        or not isinstance(man.get("files"), dict)
    ):
        return {"version": CHECK_VERSION, "files": {}}
    return man


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that a reader (or a concurrent writer: DDP ranks) never sees it half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_manifest(root: Path, man: dict[str, Any]) -> None:
    try:
        write_atomic(root / CHECK_FILE, json.dumps(man, separators=(",", ":")))
    except OSError as e:  # a read-only dataset: checked on every start instead
        log.warning("cannot cache the data check in %s (%s); the files are checked on every start",
                    root / CHECK_FILE, e)  # fmt: skip


def classes_where(num_classes: int, classes_file: str | None) -> str:
    if classes_file in (None, "", "null", "None"):
        return f"the {num_classes} classes of the run (no data.classes_file: the 19 Cityscapes classes)"
    return f"the classes file {classes_file} ({num_classes} classes)"


def bad_ids_message(path: Any, ids: Sequence[int], num_classes: int, classes_file: str | None) -> str:
    shown = ", ".join(map(str, ids[:8])) + (" ..." if len(ids) > 8 else "")
    return (
        f"label {path} holds id(s) {shown}, but {classes_where(num_classes, classes_file)} allows ids "
        f"0..{num_classes - 1} and 255 (ignore): fix the label, map those ids to 255, or add their classes "
        f"to the classes file"
    )


def check_label_ids(label: np.ndarray, num_classes: int, path: Any, classes_file: str | None = None) -> None:
    """DataError naming the file when ``label`` holds an id >= num_classes other than 255 (cheap when not)."""
    if not label.size or int(label.max()) < num_classes:
        return
    bad = (label >= num_classes) & (label != IGNORE_ID)
    if bad.any():
        ids = np.unique(label[bad]).tolist()
        raise DataError(bad_ids_message(path, ids, num_classes, classes_file), path)


def check_folder(
    root: Path,
    items: Sequence[tuple[Path, Path | None]],
    *,
    key: str = "data dir",
    num_classes: int | None = None,
    classes_file: str | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, list]:
    """Check every (image, label | None) pair of a folder split (module docstring); returns the cached
    entries ``{relative path: [size, mtime_ns, width, height(, [[id, pixels], ...])]}`` of its files.
    Raises one DataError listing the problems (the first three, and their number)."""
    t0 = time.perf_counter()
    man = load_manifest(root)
    cached: dict[str, list] = man["files"]
    entries: dict[str, list] = {}
    todo: list[tuple[str, Path, tuple[int, int], bool]] = []
    problems: list[DataError] = []
    for img, lab in items:
        for path, is_label in ((img, False), (lab, True)):
            if path is None:
                continue
            rel = path.relative_to(root).as_posix()
            try:
                st = _stat(path)
            except OSError as e:
                problems.append(DataReadError(f"cannot read {path} ({e.strerror or e})", path))
                continue
            old = cached.get(rel)
            if old is not None and old[:2] == list(st) and (len(old) == 5) == is_label:
                entries[rel] = old
            else:
                todo.append((rel, path, st, is_label))

    def run(job: tuple[str, Path, tuple[int, int], bool]) -> tuple[str, list | None, DataError | None]:
        rel, path, st, is_label = job
        try:
            if is_label:
                w, h, counts = label_info(path, st[0])
                return rel, [*st, w, h, counts], None
            return rel, [*st, *image_info(path, st[0])], None
        except DataError as e:
            return rel, None, e
        except (OSError, cv2.error) as e:
            why = getattr(e, "strerror", None) or e
            return (
                rel,
                None,
                DataReadError(f"cannot read {path} ({why}); re-copy it, or delete its pair", path),
            )

    if todo:
        from tqdm import tqdm

        n_workers = workers or min(8, os.cpu_count() or 1)
        bar = tqdm(total=len(todo), desc=f"checking {key}", unit="file", leave=False,
                   disable=not progress or len(todo) < 2000)  # fmt: skip
        with ThreadPoolExecutor(n_workers) as pool:  # cv2 and file reads release the GIL
            for rel, entry, problem in pool.map(run, todo):
                bar.update()
                if problem is not None:
                    problems.append(problem)
                else:
                    entries[rel] = entry
        bar.close()
        # entries of other files of the split stay while they exist (e.g. the labels of a target split that
        # is also read with labels, by the oracle); only files that passed are cached
        checked = {rel for rel, *_ in todo}
        keep = {
            k: v for k, v in cached.items() if k not in entries and k not in checked and (root / k).is_file()
        }
        man["files"] = dict(sorted({**keep, **entries}.items()))
        _save_manifest(root, man)
        log.info("checked %d new or changed file(s) of %s=%s in %.2f s (cached in %s)", len(todo), key, root,
                 time.perf_counter() - t0, CHECK_FILE)  # fmt: skip
    for img, lab in items:  # pairs: same size; ids within the classes
        if lab is None:
            continue
        ie = entries.get(img.relative_to(root).as_posix())
        le = entries.get(lab.relative_to(root).as_posix())
        if ie is None or le is None:
            continue
        if ie[2:4] != le[2:4]:
            msg = f"label {lab} is {le[2]}x{le[3]} but image {img} is {ie[2]}x{ie[3]}; resize the label "
            problems.append(DataError(msg + "(nearest) to the image size", lab))
        if num_classes is not None:
            bad = [c for c, _ in le[4] if num_classes <= c != IGNORE_ID]
            if bad:
                problems.append(DataError(bad_ids_message(lab, bad, num_classes, classes_file), lab))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        if len(problems) == 1:
            raise problems[0]
        shown = "; ".join(str(e) for e in problems[:3])
        raise DataError(f"{key}={root}: {len(problems)} problems: {shown}{more}")
    return entries


def class_stats(
    entries: dict[str, list], label_files: Iterable[Path], root: Path, num_classes: int
) -> list[dict[str, Any]]:
    """Rare-class statistics (``src.data.rare_class_sampling`` layout) of checked labels, from the cached
    counts: per file in the order given, the pixels of each class id < num_classes."""
    out = []
    for lab in label_files:
        rel = lab.relative_to(root).as_posix()
        counts = {int(c): int(n) for c, n in entries[rel][4] if c < num_classes}
        out.append({"file": rel, "counts": counts})
    return out

"""Generic folder dataset: the format users bring their own data in, and the synthetic data's format.

    <dir>/images/<stem>.{png,jpg,jpeg}   RGB images
    <dir>/labels/<stem>.png              single-channel PNG of train ids (0..C-1), 255 = ignore

Every image needs a label with the same stem (except for unlabelled target sets, `labels=False`).
Images are read as stored, **without EXIF rotation** (labels carry none, so a rotated photo would no longer
match its label; mmcv's `color_ignore_orientation`). Labels are 8-bit single-channel PNGs; a 16-bit PNG is
read only when every value fits in 8 bits.

`check()` (called by the data module at start-up) checks every pair once and caches the result in
``<dir>/.udass_check.json`` (src/data/check.py); `ensure_class_stats()` writes the rare-class statistics
(``sample_class_stats.json``, ``samples_with_class.json``, keyed by the label path relative to `<dir>`) from
the checked labels, again when they change. Every error is a `DataError` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from src.data.errors import DataError, DataReadError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# As stored: no EXIF rotation (src/data/check.py IMREAD_IMAGE)
IMREAD_IMAGE = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def decode_image(img: np.ndarray | None, where: str | Path) -> np.ndarray:
    """An `cv2.imread/imdecode(..., IMREAD_IMAGE)` result -> RGB uint8 HxWx3; DataReadError naming `where`."""
    if img is None:
        raise DataReadError(
            f"cannot read image {where}: the file is missing, empty or corrupt; re-copy or delete it", where
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_label(lab: np.ndarray | None, where: str | Path) -> np.ndarray:
    """An `IMREAD_UNCHANGED` result -> single-channel uint8 train ids; DataError naming `where` otherwise."""
    if lab is None:
        raise DataReadError(
            f"cannot read label {where}: the file is missing, empty or corrupt; re-copy or delete it", where
        )
    if lab.ndim != 2:
        raise DataError(
            f"label {where} has {lab.shape[2]} channels; labels must be single-channel PNGs of train ids "
            f"(0..C-1, 255 = ignore). Convert colour labels to train ids first.",
            where,
        )
    if lab.dtype != np.uint8:
        big = lab > 255
        if big.any():
            vals = np.unique(lab[big])
            shown = ", ".join(map(str, vals[:6].tolist())) + (" ..." if len(vals) > 6 else "")
            raise DataError(
                f"label {where} is a 16-bit PNG holding values above 255 ({shown}); labels are 8-bit train "
                f"ids (0..C-1, 255 = ignore): map the ids to train ids and save an 8-bit greyscale PNG",
                where,
            )
        lab = lab.astype(np.uint8)
    return lab


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 HxWx3 as stored (no EXIF rotation); a clear error naming the file when it is unreadable."""
    return decode_image(cv2.imread(str(path), IMREAD_IMAGE), path)


def read_label(path: str | Path) -> np.ndarray:
    """Single-channel uint8 train-id map; a clear error naming the file otherwise (colour, 16-bit values)."""
    return decode_label(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), path)


def load_pair(img_path: Path, lab_path: Path | None, *, fix: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Image and (optional) label of one sample; a size mismatch names both files and `fix`."""
    image = read_image(img_path)
    if lab_path is None:
        return image, None
    label = read_label(lab_path)
    if label.shape != image.shape[:2]:
        raise DataError(
            f"label {lab_path} is {label.shape[1]}x{label.shape[0]} but image {img_path} is "
            f"{image.shape[1]}x{image.shape[0]}; {fix}",
            lab_path,
        )
    return image, label


class FolderDataset:
    """Image/label pairs under `<root>/images` and `<root>/labels`, matched by file stem."""

    #: the number of classes every label id was checked against (`check`), or None: unchecked
    checked_num_classes: int | None = None

    def __init__(self, root: str | Path, *, labels: bool = True, key: str = "data dir") -> None:
        self.root = Path(root)
        self.key = key
        self._entries: dict[str, list] | None = None
        img_dir, lab_dir = self.root / "images", self.root / "labels"
        if not img_dir.is_dir():
            raise FileNotFoundError(
                f"{key}={self.root}: no folder {img_dir}. A folder dataset holds images/ and labels/ "
                f"with the same file stems; set {key} to such a folder."
            )
        images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        if not images:
            raise FileNotFoundError(f"{key}={self.root}: {img_dir} holds no .png/.jpg image")
        self.has_labels = labels
        self.items: list[tuple[Path, Path | None]]
        if labels:
            if not lab_dir.is_dir():
                raise FileNotFoundError(
                    f"{key}={self.root}: no folder {lab_dir} "
                    "(single-channel train-id PNGs with the image stems)"
                )
            lab = {p.stem: p for p in sorted(lab_dir.glob("*.png"))}
            missing = sorted(set(images) - set(lab))
            orphans = sorted(set(lab) - set(images))
            if missing or orphans:
                msg = [f"{key}={self.root}: images and labels do not pair up by file stem."]
                if missing:
                    msg.append(
                        f"{len(missing)} image(s) without label, e.g. {[images[s].name for s in missing[:5]]}"
                    )
                if orphans:
                    msg.append(
                        f"{len(orphans)} label(s) without image, e.g. {[lab[s].name for s in orphans[:5]]}"
                    )
                msg.append("Add the missing partners or remove the unpaired files.")
                raise ValueError(" ".join(msg))
            self.items = [(images[s], lab[s]) for s in sorted(images)]
        else:
            self.items = [(images[s], None) for s in sorted(images)]
        self._index = {self.label_key(i): i for i in range(len(self.items))} if labels else {}

    def __len__(self) -> int:
        return len(self.items)

    def label_key(self, i: int) -> str:
        """The label path relative to the root, as written in the rare-class statistics."""
        lab = self.items[i][1]
        return str(lab.relative_to(self.root)) if lab is not None else ""

    def index_of(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(
                f"rare-class statistics name {key!r}, which is not in {self.root}; the statistics are stale: "
                f"delete {self.root / 'sample_class_stats.json'} (rewritten at the next start)"
            ) from None

    def name(self, i: int) -> str:
        return self.items[i][0].stem

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return load_pair(*self.items[i], fix="resize the label (nearest) to the image size")

    def check(
        self, num_classes: int | None = None, classes_file: str | None = None, *, progress: bool = True
    ) -> FolderDataset:
        """Check every file once (src/data/check.py: headers, ends, sizes, label depth and ids, cached in
        ``<root>/.udass_check.json``); one DataError naming the files otherwise."""
        from src.data.check import check_folder

        self._entries = check_folder(self.root, self.items, key=self.key, num_classes=num_classes,
                                     classes_file=classes_file, progress=progress)  # fmt: skip
        if num_classes is not None and self.has_labels:
            self.checked_num_classes = int(num_classes)
        return self

    def ensure_class_stats(self, num_classes: int, classes_file: str | None = None) -> Path:
        """``<root>/sample_class_stats.json`` and ``samples_with_class.json`` of the labels (ids below
        num_classes), from the check's cached counts; (re)written atomically when missing or when the labels
        changed."""
        from src.data.check import class_stats
        from src.data.rare_class_sampling import STATS_FILE, write_class_stats

        if not self.has_labels:
            raise ValueError(f"{self.key}={self.root}: rare-class statistics need labels")
        if self._entries is None or self.checked_num_classes != num_classes:
            self.check(num_classes, classes_file)
        labels = sorted(lab for _, lab in self.items)  # the order of scripts/compute_class_stats.py
        stats = class_stats(self._entries, labels, self.root, num_classes)
        if write_class_stats(self.root, stats, only_if_changed=True):
            log.info("rare-class statistics of %d labels written to %s", len(labels), self.root / STATS_FILE)
        return self.root / STATS_FILE

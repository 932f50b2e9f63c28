"""Generic folder dataset: the format users bring their own data in, and the synthetic data's format.

    <dir>/images/<stem>.{png,jpg,jpeg}   RGB images
    <dir>/labels/<stem>.png              single-channel PNG of train ids (0..C-1), 255 = ignore

Every image needs a label with the same stem (except for unlabelled target sets, `labels=False`).
Rare-class statistics (`scripts/compute_class_stats.py <dir>`) are keyed by the label path relative
to `<dir>`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 HxWx3; a clear error naming the file when it is missing or unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(
            f"cannot read image {path}: the file is missing, empty or corrupt; re-copy or delete it"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """Single-channel uint8 train-id map; a clear error naming the file otherwise."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise OSError(
            f"cannot read label {path}: the file is missing, empty or corrupt; re-copy or delete it"
        )
    if lab.ndim != 2:
        raise ValueError(
            f"label {path} has {lab.shape[2]} channels; labels must be single-channel PNGs of train ids "
            f"(0..C-1, 255 = ignore). Convert colour labels to train ids first."
        )
    return lab.astype(np.uint8)


def load_pair(img_path: Path, lab_path: Path | None, *, fix: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Image and (optional) label of one sample; a size mismatch names both files and `fix`."""
    image = read_image(img_path)
    if lab_path is None:
        return image, None
    label = read_label(lab_path)
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"label {lab_path} is {label.shape[1]}x{label.shape[0]} but image {img_path} is "
            f"{image.shape[1]}x{image.shape[0]}; {fix}"
        )
    return image, label


class FolderDataset:
    """Image/label pairs under `<root>/images` and `<root>/labels`, matched by file stem."""

    def __init__(self, root: str | Path, *, labels: bool = True, key: str = "data dir") -> None:
        self.root = Path(root)
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
                f"run `python scripts/compute_class_stats.py {self.root}` again"
            ) from None

    def name(self, i: int) -> str:
        return self.items[i][0].stem

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return load_pair(*self.items[i], fix="resize the label (nearest) to the image size")

"""Cityscapes reader and preparation (the target domain of both synthetic-to-real benchmarks).

Cityscapes is the target domain of both synthetic-to-real benchmarks and the label space all three
datasets share (daformer_mic.md §6). The original release layout under ``ROOT`` (``$DATA_ROOT/cityscapes``)::

    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png       RGB, 2048x1024
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png         label ids (uint8)
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png    train ids: prepared

2975 train / 500 val images. ``python scripts/prepare_data.py cityscapes ROOT`` writes the
``*_gtFine_labelTrainIds.png`` files (the name cityscapesscripts gives them) from ``*_gtFine_labelIds.png``
through the label id -> train id table (:data:`CITYSCAPES_ID_TO_TRAINID`, equal to cityscapesscripts'
``json2labelImg(..., 'trainIds')`` on the polygons, without needing the polygon json files), and the
rare-class statistics of the train split into ``ROOT`` (DAFormer ``tools/convert_datasets/cityscapes.py``,
§1.7). Training reads the prepared train ids only, so no id mapping happens in the data loader.

Start-up checks and the reader base: ``src/data/datasets/prepared.py``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from src.data.classes import CITYSCAPES_ID_TO_TRAINID, map_to_train_ids
from src.data.datasets.prepared import PreparedDataset

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"


# --------------------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------------------
def read_raw_label(path: str | Path) -> np.ndarray:
    """``*_gtFine_labelIds.png``: single-channel uint8 Cityscapes label ids."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise OSError(f"cannot decode {path}: the file is missing, empty or corrupt; re-extract gtFine")
    if lab.ndim != 2:
        raise ValueError(
            f"{path} has {lab.shape[2]} channels; *_gtFine_labelIds.png files are single-channel"
        )
    return lab


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids -> train ids (daformer_mic.md §6 table; void and unlisted ids -> 255)."""
    return map_to_train_ids(label_ids, CITYSCAPES_ID_TO_TRAINID)


class CityscapesDataset(PreparedDataset):
    """Cityscapes ``split`` of the original release; the target domain (``labels=False``), the labelled
    validation set, or the oracle's labelled source (daformer_mic.md §5-§6).

    ``require_stats`` (default: a labelled train split) checks ``ROOT/sample_class_stats.json``, which the
    preparation writes for the train split only, as the reference does.
    """

    dataset = "cityscapes"
    title = "Cityscapes"
    layout = (
        "leftImg8bit/{train,val}/<city>/*_leftImg8bit.png, gtFine/{train,val}/<city>/*_gtFine_labelIds.png"
    )

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        labels: bool = True,
        require_stats: bool | None = None,
    ) -> None:
        self.split = split
        if require_stats is None:
            require_stats = labels and split == "train"
        super().__init__(root, labels=labels, require_stats=require_stats)

    def _find_images(self) -> dict[str, Path]:
        d = self.root / "leftImg8bit" / self.split
        if not d.is_dir():
            raise self._missing_dir(d, f"the {self.split} split of leftImg8bit_trainvaltest.zip")
        return {p.name[: -len(IMAGE_SUFFIX)]: p for p in sorted(d.glob(f"*/*{IMAGE_SUFFIX}"))}

    def _find_labels(self) -> dict[str, Path]:
        d = self.root / "gtFine" / self.split
        if not d.is_dir():
            raise self._missing_dir(d, f"the {self.split} split of gtFine_trainvaltest.zip")
        return {p.name[: -len(TRAIN_ID_SUFFIX)]: p for p in d.glob(f"*/*{TRAIN_ID_SUFFIX}")}

    def _expected_label(self, name: str, image: Path) -> Path:
        return self.root / "gtFine" / self.split / image.parent.name / f"{name}{TRAIN_ID_SUFFIX}"

    def _label_hint(self) -> str:
        return f"*{TRAIN_ID_SUFFIX}"


def cityscapes_jobs(root: str | Path, split: str) -> tuple[list[tuple[str, str, str | None, str]], list[str]]:
    """Preparation jobs of one split: (name, image, raw label or None, output), and orphan raw labels."""
    root = Path(root)
    img_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    images = {p.name[: -len(IMAGE_SUFFIX)]: p for p in sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}"))}
    raws = {p.name[: -len(LABEL_ID_SUFFIX)]: p for p in sorted(gt_dir.glob(f"*/*{LABEL_ID_SUFFIX}"))}
    jobs = []
    for name, img in images.items():
        raw = raws.get(name)
        out = gt_dir / img.parent.name / f"{name}{TRAIN_ID_SUFFIX}"
        jobs.append((name, str(img), None if raw is None else str(raw), str(out)))
    orphans = [str(raws[n]) for n in sorted(set(raws) - set(images))]
    return jobs, orphans

"""GTA5 reader: the labelled source domain of GTA5 -> Cityscapes (daformer_mic.md §6).

The original release layout under ``ROOT`` (``$DATA_ROOT/gta``)::

    images/NNNNN.png             RGB, 24,966 frames, most 1914x1052
    labels/NNNNN.png             palette ("P" mode) PNGs whose palette *indices* are Cityscapes label ids
    labels_trainids/NNNNN.png    train ids (uint8, 255 = ignore): written by scripts/prepare_data.py gta5

``python scripts/prepare_data.py gta5 ROOT`` converts the labels with :func:`to_train_ids` (the Cityscapes
label id -> train id table, DAFormer ``tools/convert_datasets/gta.py``), and writes the rare-class
statistics (``sample_class_stats.json``, ``samples_with_class.json``) and ``manifest.json`` into ``ROOT``.
GTA5 has no split: every frame is a training frame.

GTA5 quirks (§6): a few frames have a label whose size differs from the image by a few pixels. The
reference ignores this (mmseg resizes image and label independently); the preparation resizes such labels
to their image's size with nearest-neighbour interpolation and reports them, so image and label always
align here. Frames 15188 and 17705 are reported near-blank; the reference trains on them, and so do we
(the default; a third-party "fixer" script drops them: delete the two image files to do the same, and run
the preparation again so that the statistics no longer name them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.data.classes import CITYSCAPES_ID_TO_TRAINID, map_to_train_ids
from src.data.datasets.prepared import FlatPreparedDataset

IMAGE_DIR = "images"
RAW_LABEL_DIR = "labels"
LABEL_DIR = "labels_trainids"


def read_raw_label(path: str | Path) -> np.ndarray:
    """A GTA5 label PNG -> HxW uint8 Cityscapes label ids.

    The release stores palette PNGs whose palette indices are the label ids, so the file is read with PIL
    and the indices are kept (OpenCV would expand the palette into colours). A greyscale ("L") file is
    taken as ids too; a colour (RGB) label is an error, as its colours would need a reverse palette.
    """
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(
                f"{path} is a {im.mode} image; GTA5 labels are palette PNGs whose indices are Cityscapes "
                f"label ids (re-extract labels from the original GTA5 release)"
            )
        return np.asarray(im, dtype=np.uint8).copy()


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids -> train ids (daformer_mic.md §6: 7->0 road, ..., 33->18 bicycle; else 255)."""
    return map_to_train_ids(label_ids, CITYSCAPES_ID_TO_TRAINID)


class GTA5Dataset(FlatPreparedDataset):
    """GTA5 frames with prepared train-id labels (DAFormer ``mmseg/datasets/gta.py``: every frame, no split).

    ``require_stats`` (default True) checks ``ROOT/sample_class_stats.json`` at start-up, which rare-class
    sampling reads; the preparation always writes it.
    """

    dataset = "gta5"
    title = "GTA5"
    layout = "images/NNNNN.png, labels/NNNNN.png"

    image_dir = IMAGE_DIR
    raw_label_dir = RAW_LABEL_DIR
    label_dir = LABEL_DIR


def gta5_jobs(root: str | Path) -> tuple[list[tuple[str, str, str | None, str]], list[str]]:
    """Preparation jobs (name, image, raw label or None, output), and raw labels without an image."""
    return GTA5Dataset.jobs(root)

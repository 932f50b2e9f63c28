"""SYNTHIA-RAND-CITYSCAPES reader: the labelled source domain of SYNTHIA -> Cityscapes (daformer_mic.md §6).

The original release layout under ``ROOT`` (``$DATA_ROOT/synthia``)::

    RGB/NNNNNNN.png                   RGB, about 9.4k frames of 1280x760
    GT/LABELS/NNNNNNN.png             16-bit 3-channel PNGs: class id in the R channel (instance id in G)
    GT/LABELS_trainids/NNNNNNN.png    train ids (uint8, 255 = ignore): written by scripts/prepare_data.py

``python scripts/prepare_data.py synthia ROOT`` converts the labels with :func:`to_train_ids` (DAFormer
``tools/convert_datasets/synthia.py``) and writes the rare-class statistics and ``manifest.json`` into
``ROOT``. SYNTHIA has no terrain, truck or train: the network keeps 19 outputs, those three classes get no
supervision, and the evaluation reports the 16- and 13-class means (``data.eval_subsets: ["16", "13"]``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from src.data.classes import SYNTHIA_ID_TO_TRAINID, map_to_train_ids
from src.data.datasets.prepared import FlatPreparedDataset

IMAGE_DIR = "RGB"
RAW_LABEL_DIR = "GT/LABELS"
LABEL_DIR = "GT/LABELS_trainids"

# cv2 returns channels in B, G, R(, A) order: the R channel, which holds the class id, is index 2.
CLASS_CHANNEL = 2


def read_raw_label(path: str | Path) -> np.ndarray:
    """A SYNTHIA label PNG as stored: ``cv2.imread(path, cv2.IMREAD_UNCHANGED)``, uint16 HxWx3 (B, G, R).

    Not PIL: it opens these 16-bit-per-channel PNGs as 8-bit RGB (only the high byte of each value, so a
    class id of 3 reads as 0); the reference notes the same ("PIL cannot read the format").
    """
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise OSError(f"cannot decode {path}")
    return lab


def to_train_ids(raw: np.ndarray) -> np.ndarray:
    """SYNTHIA label array -> uint8 train ids (daformer_mic.md §6 table; unlisted ids -> 255).

    The class id is the R channel. OpenCV returns the channels as B, G, R, so the R channel is index 2,
    which is what the reference's ``[:, :, -1]`` takes for the 3-channel files of the release (other
    readers, e.g. imageio, return R, G, B and take index 0: the same channel). Index 2 is also right for a
    4-channel (B, G, R, A) file, where ``-1`` would be alpha. A single-channel array is taken as class ids.
    """
    ids = raw[..., CLASS_CHANNEL] if raw.ndim == 3 else raw
    return map_to_train_ids(ids, SYNTHIA_ID_TO_TRAINID)


class SynthiaDataset(FlatPreparedDataset):
    """SYNTHIA-RAND-CITYSCAPES frames with prepared train-id labels (every frame, no split; DAFormer
    ``mmseg/datasets/synthia.py``). ``require_stats`` (default True) checks ``ROOT/sample_class_stats.json``.
    """

    dataset = "synthia"
    title = "SYNTHIA"
    layout = "RGB/NNNNNNN.png, GT/LABELS/NNNNNNN.png"

    image_dir = IMAGE_DIR
    raw_label_dir = RAW_LABEL_DIR
    label_dir = LABEL_DIR


def synthia_jobs(root: str | Path) -> tuple[list[tuple[str, str, str | None, str]], list[str]]:
    """Preparation jobs (name, image, raw label or None, output), and raw labels without an image."""
    return SynthiaDataset.jobs(root)

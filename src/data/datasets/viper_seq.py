"""VIPER clips: the labelled source of VIPER -> Cityscapes-Seq (video_uda.md §1.1-§1.4, udass.md §2.2-§2.3).

The release layout under ``ROOT`` (``$DATA_ROOT/viper``), as the forks expect it (video_uda.md §1.1)::

    {split}/img/<seq:03d>/<seq:03d>_<frame:05d>.jpg    RGB, 1920x1080 (lossy jpg package)
    {split}/cls/<seq:03d>/<seq:03d>_<frame:05d>.png    8-bit palette PNGs, palette index = VIPER class id

- **Clips** (§1.2): the current frames are the labelled 1-in-10 frames (frame number ending in 0; 13 367 in
  ``train``), each with its previous frame t−1 (ending in 9, from VIPER's ``*[2-9]`` image package); TPS and
  UDASS also read t−1's label, so ``prev_labels`` (default true) needs the ``*9`` cls PNGs too. A list file
  in the forks' format (``NNN/NNN_FFFFF.jpg`` a line, ``Viper_list/train.txt``) can be given instead.
- **Labels** (§1.4): the palette index is the class id (read with PIL; OpenCV would expand the palette into
  colours). The connected component (8-connectivity, OpenCV's default as in ``tps/dataset/Viper.py``) of car
  pixels (id 24) containing the bottom-centre pixel is the ego vehicle and becomes unlabelled (id 0); then
  ids map to the 15 classes (:data:`VIPER_ID_TO_VIPER15`), van (25) and the rest to 255. The reference runs
  the removal after resizing the label to 1280x720; we run it at the stored resolution before the
  pipeline's resize (the same component, up to resampling).
- **Size** (§1.3): frames are resized to 1280x720 by the data config (``source_scale``).
- **Flows** (§2.2): ``<seq>_<t:05d><t−1:05d>_int16_x10.npy`` flat in one folder (TPS
  ``estimated_optical_flow_viper_train``), at 1024x576 as published; any resolution is resized with the
  frames.

No preparation is needed for training; rare-class sampling reads ``ROOT/sample_class_stats.json`` of the
current frames' 15-class labels, written by ``python scripts/prepare_data.py viper_seq ROOT``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np

from src.data.classes import VIPER_CAR_ID, VIPER_ID_TO_VIPER15, map_to_train_ids
from src.data.datasets.clip_folder import FLOW_SUFFIX, ClipDataset

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^(?P<seq>\d+)_(?P<frame>\d{5})$")


def viper_flow_name(seq: str, t: int, s: int) -> str:
    """``<seq>_<t:05d><s:05d>_int16_x10.npy`` (video_uda.md §2.2: no separator between the frame numbers)."""
    return f"{seq}_{t:05d}{s:05d}{FLOW_SUFFIX}"


def read_viper_ids(path: str | Path) -> np.ndarray:
    """A VIPER ``cls`` PNG -> HxW uint8 VIPER class ids (palette indices; a greyscale file: the ids)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(
                    f"label {path} is a {im.mode} image; VIPER cls labels are palette PNGs whose palette "
                    "index is the class id (video_uda.md §1.4): re-extract the cls package of the release"
                )
            return np.asarray(im, dtype=np.uint8).copy()
    except OSError as e:
        raise OSError(
            f"cannot read label {path} ({e}): the file is missing or corrupt; re-extract it"
        ) from None


def remove_ego_vehicle(ids: np.ndarray, car_id: int = VIPER_CAR_ID) -> np.ndarray:
    """Set the car component (8-connected) holding the bottom-centre pixel to 0 (video_uda.md §1.4)."""
    car = (ids == car_id).astype(np.uint8)
    h, w = ids.shape
    if not car[h - 1, w // 2]:
        return ids
    _, comp = cv2.connectedComponents(car, connectivity=8)
    out = ids.copy()
    out[comp == comp[h - 1, w // 2]] = 0
    return out


def to_viper15(ids: np.ndarray, *, ego_vehicle: bool = True) -> np.ndarray:
    """VIPER ids -> 15-class ids (ego vehicle removed first when ``ego_vehicle``), 255 = ignore."""
    if ego_vehicle:
        ids = remove_ego_vehicle(ids)
    return map_to_train_ids(ids, VIPER_ID_TO_VIPER15)


class ViperSeqDataset(ClipDataset):
    """VIPER clips (module docstring). ``every``: current frames are the labelled frames whose number is a
    multiple of it (10, the 1-in-10 labelled frames); ``list_file``: the forks' list instead."""

    title = "VIPER"
    dataset = "viper_seq"
    layout = "{split}/img/<seq>/<seq>_<frame:05d>.jpg, {split}/cls/<seq>/<seq>_<frame:05d>.png"

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        labels: bool = True,
        prev_labels: bool = True,
        flow_dir: str | Path | None = None,
        list_file: str | Path | None = None,
        every: int = 10,
        ego_vehicle: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.has_labels = bool(labels)
        self.prev_labels = bool(prev_labels) and self.has_labels
        self.flow_dir = Path(flow_dir) if flow_dir else self.root / "flows"
        self.ego_vehicle = bool(ego_vehicle)
        self.img_dir, self.cls_dir = self.root / split / "img", self.root / split / "cls"
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"VIPER root {self.root} does not exist. Put the release there ({self.layout}), or point "
                f"paths.data_dir (DATA_ROOT) at the folder holding {self.root.name}/"
            )
        if not self.img_dir.is_dir():
            raise FileNotFoundError(
                f"VIPER: no folder {self.img_dir} (the jpg frames of the release, {self.layout})"
            )
        if list_file:
            self.items = self._from_list(Path(list_file))
        else:
            if not self.cls_dir.is_dir():
                raise FileNotFoundError(
                    f"VIPER: no folder {self.cls_dir}: the current frames are the labelled frames of the "
                    f"cls package ({self.layout}); extract it, or pass "
                    "data.source.list_file=<Viper_list/train.txt>"
                )
            items, first = [], 0
            for p in sorted(self.cls_dir.glob("*/*.png")):
                m = _NAME_RE.match(p.stem)
                if m is None or int(m["frame"]) % int(every):
                    continue
                if int(m["frame"]) == 0:  # no previous frame: never a current frame (reference lists)
                    first += 1
                    continue
                items.append((m["seq"], int(m["frame"])))
            if first:
                log.info("VIPER: %d labelled frame(s) 00000 have no t-1 and are not clips", first)
            self.items = items
        if not self.items:
            raise FileNotFoundError(f"VIPER: no labelled frame found under {self.cls_dir} ({self.layout})")

    def _from_list(self, path: Path) -> list[tuple[str, int]]:
        if not path.is_file():
            raise FileNotFoundError(f"VIPER list file {path} does not exist (one NNN/NNN_FFFFF.jpg a line)")
        items = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            m = _NAME_RE.match(Path(line).stem)
            if m is None:
                raise ValueError(f"{path}:{n}: {line!r} is not NNN/NNN_FFFFF.jpg (the Viper_list format)")
            items.append((m["seq"], int(m["frame"])))
        return items

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        seq, t = self.items[i]
        return f"{seq}_{t:05d}"

    def frame_path(self, i: int, k: int) -> Path:
        seq, t = self.items[i]
        return self.img_dir / seq / f"{seq}_{t - k:05d}.jpg"

    def label_path(self, i: int, k: int) -> Path | None:
        if not self.has_labels or (k > 0 and not self.prev_labels):
            return None
        seq, t = self.items[i]
        return self.cls_dir / seq / f"{seq}_{t - k:05d}.png"

    def flow_path(self, i: int, a: int, b: int) -> Path:
        seq, t = self.items[i]
        return self.flow_dir / viper_flow_name(seq, t - a, t - b)

    def read_label(self, path: Path) -> np.ndarray:
        return to_viper15(read_viper_ids(path), ego_vehicle=self.ego_vehicle)

    def frames_hint(self) -> str:
        return (
            "VIPER's t−1 frames (numbers ending in 9) are in the release's *[2-9] image package, not the *0 "
            "one (video_uda.md §1.2): extract it"
        )

    def labels_hint(self) -> str:
        return (
            "t−1 labels (ending in 9) come from the *[2-9] cls package; extract it, or set "
            "data.source.prev_labels=false (gt_prev is then all 255)"
        )

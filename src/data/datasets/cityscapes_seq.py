"""Cityscapes-Seq clips: the target of both video benchmarks (video_uda.md §1.1-§1.5, udass.md §2.2-§2.3).

The release layout under ``ROOT`` (``$DATA_ROOT/cityscapes``, the image Cityscapes root plus the sequences)::

    leftImg8bit_sequence/{train,val}/<city>/<city>_<seq>_<frame:06d>_leftImg8bit.png    30-frame snippets
    gtFine/{train,val}/<city>/<city>_<seq>_<frame:06d>_gtFine_labelIds.png                the annotated frames

- **Clips** (§1.2): one per annotated frame t (the 20th of its snippet: ``*_000019`` in train, arbitrary
  numbers in frankfurt val), listed from ``gtFine/{split}`` (or ``leftImg8bit/{split}``, or a list file in the
  forks' format ``<city>/<city>_<seq>_<frame>_leftImg8bit.png``): 2975 train, 500 val. The earlier frames are
  "frame number − k", zero-padded to 6 digits. Only t, t−1, t−Δ, t−Δ−1 are read, so a selective extraction of
  ``leftImg8bit_sequence_trainvaltest.zip`` is enough (§5 item 4).
- **Labels** (``labels=True``, validation): ``*_gtFine_labelIds.png`` at full resolution, mapped on the fly
  with the protocol's table: ``viper15`` (:data:`CITYSCAPES_ID_TO_VIPER15`, rider merged into person, §1.4),
  ``synthia12`` (:data:`CITYSCAPES_ID_TO_SYNTHIA12`, §1.5) or ``cityscapes19`` (the 19 train ids). The target
  train split is read unlabelled (its labels are unused in the reference too, §1.2).
- **Size** (§1.3): frames are resized to 1024x512 by the data config; validation labels stay at 2048x1024.
- **Flows** (§2.2): ``<city>_<seq>_<t:06d>_<s:06d>_int16_x10.npy`` flat in one folder (TPS
  ``estimated_optical_flow_cityscapes_seq_{train,val}``, 1024x512 as published).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from src.data.classes import (
    CITYSCAPES_ID_TO_SYNTHIA12,
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_ID_TO_VIPER15,
    map_to_train_ids,
)
from src.data.datasets.cityscapes import read_raw_label
from src.data.datasets.clip_folder import ClipDataset, cityscapes_flow_name

SEQ_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
PROTOCOLS: dict[str, dict[int, int]] = {
    "viper15": CITYSCAPES_ID_TO_VIPER15,
    "synthia12": CITYSCAPES_ID_TO_SYNTHIA12,
    "cityscapes19": CITYSCAPES_ID_TO_TRAINID,
}
_NAME_RE = re.compile(r"^(?P<city>[^_/]+)_(?P<seq>\d+)_(?P<frame>\d+)$")


class CityscapesSeqDataset(ClipDataset):
    """Cityscapes-Seq clips of ``split`` (module docstring); ``protocol`` picks the label map."""

    title = "Cityscapes-Seq"
    dataset = "cityscapes_seq"
    layout = (
        "leftImg8bit_sequence/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png, "
        "gtFine/{train,val}/<city>/*_gtFine_labelIds.png"
    )

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        labels: bool = False,
        protocol: str = "viper15",
        flow_dir: str | Path | None = None,
        list_file: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.has_labels = bool(labels)
        self.prev_labels = False
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown Cityscapes-Seq protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
        self.protocol = protocol
        self.mapping = PROTOCOLS[protocol]
        self.flow_dir = Path(flow_dir) if flow_dir else self.root / "flows"
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"Cityscapes root {self.root} does not exist. Put the release there ({self.layout}), or "
                "point "
                f"paths.data_dir (DATA_ROOT) at the folder holding {self.root.name}/"
            )
        self.seq_dir = self.root / "leftImg8bit_sequence" / split
        if not self.seq_dir.is_dir():
            raise FileNotFoundError(
                f"Cityscapes-Seq: no folder {self.seq_dir}. Extract the {split} frames of "
                f"leftImg8bit_sequence_trainvaltest.zip into {self.root} (only frames t, t−1, t−2 of each "
                "snippet are read, video_uda.md §5)"
            )
        self.gt_dir = self.root / "gtFine" / split
        if list_file:
            self.items = self._from_list(Path(list_file))
        elif self.gt_dir.is_dir():
            self.items = self._scan(self.gt_dir, LABEL_ID_SUFFIX)
        elif (self.root / "leftImg8bit" / split).is_dir() and not self.has_labels:
            self.items = self._scan(self.root / "leftImg8bit" / split, SEQ_SUFFIX)
        else:
            raise FileNotFoundError(
                f"Cityscapes-Seq: no folder {self.gt_dir}: the annotated frames (the clips' current frames) "
                "are "
                f"listed from gtFine_trainvaltest.zip; extract it, or pass a list file "
                f"(data.<target|val>.list_file, lines <city>/<city>_<seq>_<frame>_leftImg8bit.png)"
            )
        if not self.items:
            raise FileNotFoundError(f"Cityscapes-Seq {split}: no annotated frame found under {self.root}")

    @staticmethod
    def _scan(folder: Path, suffix: str) -> list[tuple[str, str, int]]:
        items = []
        for p in sorted(folder.glob(f"*/*{suffix}")):
            m = _NAME_RE.match(p.name[: -len(suffix)])
            if m is not None:
                items.append((m["city"], m["seq"], int(m["frame"])))
        return items

    def _from_list(self, path: Path) -> list[tuple[str, str, int]]:
        if not path.is_file():
            raise FileNotFoundError(f"Cityscapes-Seq list file {path} does not exist")
        items = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            stem = Path(line).name.replace(SEQ_SUFFIX, "")
            m = _NAME_RE.match(stem)
            if m is None:
                raise ValueError(f"{path}:{n}: {line!r} is not <city>/<city>_<seq>_<frame>_leftImg8bit.png")
            items.append((m["city"], m["seq"], int(m["frame"])))
        return items

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        city, seq, t = self.items[i]
        return f"{city}_{seq}_{t:06d}"

    def frame_path(self, i: int, k: int) -> Path:
        city, seq, t = self.items[i]
        return self.seq_dir / city / f"{city}_{seq}_{t - k:06d}{SEQ_SUFFIX}"

    def label_path(self, i: int, k: int) -> Path | None:
        if not self.has_labels or k != 0:  # only the annotated frame has a label (gtFine)
            return None
        city, seq, t = self.items[i]
        return self.gt_dir / city / f"{city}_{seq}_{t:06d}{LABEL_ID_SUFFIX}"

    def flow_path(self, i: int, a: int, b: int) -> Path:
        city, seq, t = self.items[i]
        return self.flow_dir / cityscapes_flow_name(f"{city}_{seq}", t - a, t - b)

    def read_label(self, path: Path) -> np.ndarray:
        return map_to_train_ids(read_raw_label(path), self.mapping)

    def frames_hint(self) -> str:
        return (
            "extract these frames of leftImg8bit_sequence_trainvaltest.zip (frames t, t−1, t−Δ, t−Δ−1 of "
            "each snippet)"
        )

    def labels_hint(self) -> str:
        return "extract gtFine_trainvaltest.zip (the *_gtFine_labelIds.png files)"

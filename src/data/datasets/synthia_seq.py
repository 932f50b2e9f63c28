"""SYNTHIA-Seq clips: the labelled source of SYNTHIA-Seq -> Cityscapes-Seq (video_uda.md §1.1-§1.5, udass.md
§2.2-§2.3).

Read directly from the tree the official ``SYNTHIA-SEQS-04-DAWN`` archive unpacks to (``ROOT`` =
``$DATA_ROOT/SYNTHIA-SEQS-04-DAWN``), the camera DA-VSN/TPS use (Stereo_Left/Omni_F, video_uda.md §1.1)::

    RGB/Stereo_Left/Omni_F/<frame:06d>.png          RGB, 1280x760, frames 000000..000849
    GT/LABELS/Stereo_Left/Omni_F/<frame:06d>.png    16-bit multi-channel PNGs: class id in R, instance in G

No copy or symlink to the forks' ``rgb/`` and ``label/`` folders is needed (if only those exist, they are
read).

- **Clips** (§1.2): every frame with a previous frame is a current frame (000001..000849, 849 clips; frame 0
  is only ever a previous frame), with t−1; ``prev_labels`` (default true) reads t−1's label too, as TPS.
- **Labels** (§1.5): the class id is the R channel (channel 0 in RGB order; OpenCV's B, G, R order makes it
  index 2, src/data/datasets/synthia.py), mapped to the 12 classes (:data:`SYNTHIA_SEQ_ID_TO_SYNTHIA12`:
  bicycle -> rider, lanemarking and the rest -> 255); evaluation drops fence (``eval_subsets: ["11"]``).
- **Size** (§1.3): the bottom ``cut_bottom`` = 120 rows of every frame and label are cut (1280x760 ->
  1280x640); the flows are computed on the cut frames (§2.1), so they are not cut.
- **Flows** (§2.2): ``<t:06d>_int16_x10.npy`` = flow t -> t−1, flat in one folder (TPS
  ``estimated_optical_flow_synthiaseq_train``, 683x341 as published). Other pairs (our extension, only for a
  target-side use) are named ``<t:06d>_<s:06d>_int16_x10.npy``.

Rare-class sampling reads ``ROOT/sample_class_stats.json`` of the current frames' 12-class labels, written by
``python scripts/prepare_data.py synthia_seq ROOT``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from src.data.classes import SYNTHIA_SEQ_ID_TO_SYNTHIA12, map_to_train_ids
from src.data.datasets.clip_folder import FLOW_SUFFIX, ClipDataset
from src.data.datasets.synthia import CLASS_CHANNEL, read_raw_label

log = logging.getLogger(__name__)

CAMERA = "Stereo_Left/Omni_F"
CUT_BOTTOM = 120  # rows cut from the bottom of frames and labels (video_uda.md §1.3)


def synthia_seq_flow_name(t: int, s: int) -> str:
    """``<t:06d>_int16_x10.npy`` for t -> t−1 (video_uda.md §2.2); else ``<t:06d>_<s:06d>_int16_x10.npy``."""
    return f"{t:06d}{FLOW_SUFFIX}" if s == t - 1 else f"{t:06d}_{s:06d}{FLOW_SUFFIX}"


def to_synthia12(raw: np.ndarray) -> np.ndarray:
    """A SYNTHIA-Seq label as read by OpenCV (uint16 B, G, R) -> 12-class ids (R channel), 255 = ignore."""
    ids = raw[..., CLASS_CHANNEL] if raw.ndim == 3 else raw
    return map_to_train_ids(ids, SYNTHIA_SEQ_ID_TO_SYNTHIA12)


class SynthiaSeqDataset(ClipDataset):
    """SYNTHIA-Seq clips (module docstring)."""

    title = "SYNTHIA-Seq"
    dataset = "synthia_seq"
    layout = f"RGB/{CAMERA}/<frame:06d>.png, GT/LABELS/{CAMERA}/<frame:06d>.png"

    def __init__(
        self,
        root: str | Path,
        *,
        labels: bool = True,
        prev_labels: bool = True,
        flow_dir: str | Path | None = None,
        camera: str = CAMERA,
        cut_bottom: int = CUT_BOTTOM,
        list_file: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = "train"
        self.has_labels = bool(labels)
        self.prev_labels = bool(prev_labels) and self.has_labels
        self.flow_dir = Path(flow_dir) if flow_dir else self.root / "flows"
        self.cut_bottom = int(cut_bottom)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"SYNTHIA-Seq root {self.root} does not exist. Unpack SYNTHIA-SEQS-04-DAWN there "
                f"({self.layout}), "
                f"or point paths.data_dir (DATA_ROOT) at the folder holding {self.root.name}/"
            )
        self.rgb_dir, self.label_dir = self.root / "RGB" / camera, self.root / "GT" / "LABELS" / camera
        if not self.rgb_dir.is_dir() and (self.root / "rgb").is_dir():  # the forks' renamed copy
            log.info("SYNTHIA-Seq: reading the renamed rgb/ and label/ folders of %s", self.root)
            self.rgb_dir, self.label_dir = self.root / "rgb", self.root / "label"
        if not self.rgb_dir.is_dir():
            raise FileNotFoundError(
                f"SYNTHIA-Seq: no folder {self.rgb_dir}. {self.root} must hold the unpacked release "
                f"({self.layout}); the methods use the {camera} camera (video_uda.md §1.1)"
            )
        frames = sorted(int(p.stem) for p in self.rgb_dir.glob("*.png") if p.stem.isdigit())
        if list_file:
            path = Path(list_file)
            if not path.is_file():
                raise FileNotFoundError(f"SYNTHIA-Seq list file {path} does not exist (000001.png a line)")
            self.items = [int(Path(x.strip()).stem) for x in path.read_text().splitlines() if x.strip()]
        else:
            have = set(frames)
            self.items = [t for t in frames if t - 1 in have]  # frame 0 is only a previous frame (§1.2)
        if not self.items:
            raise FileNotFoundError(f"SYNTHIA-Seq: no pair of consecutive frames in {self.rgb_dir}")
        if self.has_labels and not self.label_dir.is_dir():
            raise FileNotFoundError(
                f"SYNTHIA-Seq: no folder {self.label_dir} (the 16-bit GT/LABELS of the release, "
                f"{self.layout})"
            )

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        return f"{self.items[i]:06d}"

    def frame_path(self, i: int, k: int) -> Path:
        return self.rgb_dir / f"{self.items[i] - k:06d}.png"

    def label_path(self, i: int, k: int) -> Path | None:
        if not self.has_labels or (k > 0 and not self.prev_labels):
            return None
        return self.label_dir / f"{self.items[i] - k:06d}.png"

    def flow_path(self, i: int, a: int, b: int) -> Path:
        t = self.items[i]
        return self.flow_dir / synthia_seq_flow_name(t - a, t - b)

    def _cut(self, arr: np.ndarray) -> np.ndarray:
        return arr[: arr.shape[0] - self.cut_bottom] if self.cut_bottom > 0 else arr

    def read_frame(self, path: Path) -> np.ndarray:
        return np.ascontiguousarray(self._cut(super().read_frame(path)))

    def read_label(self, path: Path) -> np.ndarray:
        try:
            raw = read_raw_label(path)
        except OSError:
            raise OSError(
                f"cannot read label {path}: the file is missing or corrupt; re-extract it"
            ) from None
        return np.ascontiguousarray(self._cut(to_synthia12(raw)))

    def flow_command(self) -> str:
        return f"python scripts/compute_flow.py synthia_seq {self.root} --out {self.flow_dir}"

    def frames_hint(self) -> str:
        return f"extract every frame of the {self.rgb_dir} sequence"

"""Video clips: the base every clip dataset shares, and the generic clip folder layout.

A *clip* is one current frame t and the earlier frames of its sequence (video_uda.md §1.2, udass.md §2.3).
Frames are addressed by their *offset* k from t (k = 0: t, k = 1: t−1, k = Δ: t−Δ, ...) and flows by an
offset pair (a, b): the backward flow from frame t−a to frame t−b on t−a's pixel grid (video_uda.md §2.1,
src/data/flow.py). Which offsets and flows a split needs is decided by the video data module
(src/data/video_datamodule.py); a dataset reads exactly those (:meth:`ClipDataset.load_clip`) and checks
at start-up that they exist (:meth:`ClipDataset.verify`), naming the missing files and the fix.

The generic layout (our design; the synthetic clips are written in it, ``data=clip_folder`` reads your own)::

    DIR/frames/<clip>_<frame:06d>.png|jpg                  RGB frames of every clip
    DIR/labels/<clip>_<frame:06d>.png                      train-id labels (255 = ignore): the current frame
                                                           of each clip, and t−1 for ``prev_labels``
    DIR/flows/<clip>_<t:06d>_<s:06d>_int16_x10.npy         backward flow t -> s, int16 × 10 (Cityscapes
                                                           naming, video_uda.md §2.2)
    DIR/sample_class_stats.json                            rare-class statistics of the current frames

``<clip>`` is any name (it may hold underscores); the digits after its last underscore are the frame number,
and a clip's current frame t is its highest-numbered frame, so a clip holds t and the frames before it that
the methods read (t−1 for the source and validation, t−1, t−Δ, t−Δ−1 for the target).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from src.data.datasets.folder import IMAGE_SUFFIXES, read_image, read_label
from src.data.flow import read_flow

log = logging.getLogger(__name__)

FLOW_SUFFIX = "_int16_x10.npy"
_FRAME_RE = re.compile(r"^(?P<clip>.+)_(?P<frame>\d+)$")

Pair = tuple[int, int]


@dataclass
class Clip:
    """The frames, labels and flows of one clip that were asked for (keys: offsets / offset pairs)."""

    name: str
    frames: dict[int, np.ndarray]
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    flows: dict[Pair, np.ndarray] = field(default_factory=dict)


def cityscapes_flow_name(clip: str, t: int, s: int) -> str:
    """``<city>_<seq>_<t:06d>_<s:06d>_int16_x10.npy`` (video_uda.md §2.2), ``clip`` = ``<city>_<seq>``."""
    return f"{clip}_{t:06d}_{s:06d}{FLOW_SUFFIX}"


class ClipDataset:
    """Base of the clip datasets: checks, reading and the rare-class interface.

    Subclasses fill ``self.root`` and implement ``__len__``, :meth:`name`, :meth:`frame_path`,
    :meth:`label_path`, :meth:`flow_path`, :meth:`read_label` (raw file -> protocol ids), and may override
    :meth:`read_frame` (SYNTHIA-Seq cuts rows), :meth:`flow_command` and :meth:`frames_hint`. The rare-class
    interface (``stats_root``, ``label_key``, ``index_of``) keys the current frame's label by its path
    relative to ``stats_root``, as in ``sample_class_stats.json`` (daformer_mic.md §1.7).
    """

    title: ClassVar[str] = "clips"
    dataset: ClassVar[str] = "clip_folder"  # the scripts/compute_flow.py / prepare_data.py dataset name
    root: Path
    has_labels: bool = False
    prev_labels: bool = False
    flow_dir: Path | None = None
    split: str = "train"
    #: ``data.flow.format`` (set by the video data module): ``kitti_png`` reads ``<published name>.png``
    #: in the KITTI 16-bit encoding instead of ``..._int16_x10.npy`` (src/data/flow.py)
    flow_format: str = "auto"

    # -- subclass hooks --------------------------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    def frame_path(self, i: int, k: int) -> Path:
        """The file of frame t−k of clip i."""
        raise NotImplementedError

    def label_path(self, i: int, k: int) -> Path | None:
        """The label file of frame t−k of clip i (None: the dataset has no label for that frame)."""
        raise NotImplementedError

    def flow_path(self, i: int, a: int, b: int) -> Path:
        """The flow file t−a -> t−b of clip i, in the published naming of the dataset."""
        raise NotImplementedError

    def flow_file(self, i: int, a: int, b: int) -> Path:
        """:meth:`flow_path` in the configured ``flow_format`` (``kitti_png``: the ``.png`` of that name)."""
        path = self.flow_path(i, a, b)
        if self.flow_format == "kitti_png" and path.name.endswith(FLOW_SUFFIX):
            path = path.with_name(path.name[: -len(FLOW_SUFFIX)] + ".png")
        return path

    def read_frame(self, path: Path) -> np.ndarray:
        return read_image(path)

    def read_label(self, path: Path) -> np.ndarray:
        """A label file -> uint8 ids of the training protocol (255 = ignore)."""
        return read_label(path)

    def flow_command(self) -> str:
        """The command that computes the missing flows (scripts/compute_flow.py)."""
        flow_dir = self.flow_dir if self.flow_dir is not None else "<flow dir>"
        return (
            f"python scripts/compute_flow.py {self.dataset} {self.root} --split {self.split} --out {flow_dir}"
        )

    def frames_hint(self) -> str:
        return "add the missing frames, or lower data.interval"

    # -- rare-class interface --------------------------------------------------------------------------
    @property
    def stats_root(self) -> Path:
        """The folder holding ``sample_class_stats.json`` of the current frames."""
        return self.root

    def label_key(self, i: int) -> str:
        path = self.label_path(i, 0)
        if path is None:
            return ""
        try:
            return path.relative_to(self.stats_root).as_posix()
        except ValueError:
            return path.as_posix()

    def index_of(self, key: str) -> int:
        index = getattr(self, "_key_index", None)
        if index is None:
            index = self._key_index = {self.label_key(i): i for i in range(len(self))}
        try:
            return index[key]
        except KeyError:
            raise KeyError(
                f"the rare-class statistics in {self.stats_root} name {key!r}, which is not the current "
                f"frame's label of any clip of this dataset: the statistics are stale; delete "
                f"{self.stats_root / 'sample_class_stats.json'} and prepare the dataset again"
            ) from None

    def current_label_files(self) -> list[Path]:
        """The current frame's label of every clip (what the rare-class statistics count)."""
        out = []
        for i in range(len(self)):
            p = self.label_path(i, 0)
            if p is None:
                raise ValueError(
                    f"{self.title} {self.root}: clip {self.name(i)} has no label of its current frame"
                )
            out.append(p)
        return out

    # -- checks and reading ----------------------------------------------------------------------------
    def verify(
        self,
        offsets: Iterable[int],
        label_offsets: Iterable[int] = (),
        flow_pairs: Iterable[Pair] = (),
        *,
        max_report: int = 5,
    ) -> None:
        """Check that every frame, label and flow file the clips need exists; one error per kind of file,
        naming up to ``max_report`` missing files and the command or setting that fixes it."""
        offsets, label_offsets, flow_pairs = (
            sorted(set(offsets)),
            sorted(set(label_offsets)),
            sorted(set(flow_pairs)),
        )
        kinds = (
            ("frame", lambda i: [self.frame_path(i, k) for k in offsets], self.frames_hint()),
            ("label", lambda i: [self.label_path(i, k) for k in label_offsets], self.labels_hint()),
            ("flow", lambda i: [self.flow_file(i, a, b) for a, b in flow_pairs], self._flow_hint()),
        )
        for kind, paths_of, hint in kinds:
            missing, total = [], 0
            for i in range(len(self)):
                for p in paths_of(i):
                    total += 1
                    if p is None or not p.is_file():
                        missing.append(p if p is not None else f"{self.name(i)} (no {kind} file)")
            if missing:
                examples = [str(m) for m in missing[:max_report]]
                raise FileNotFoundError(
                    f"{self.title} {self.root}: {len(missing)} of {total} {kind} file(s) the clips need are "
                    f"missing, e.g. {examples}. {hint}"
                )

    def labels_hint(self) -> str:
        return "add the labels (train-id PNGs), or set prev_labels=false for a dataset without t−1 labels"

    def _flow_hint(self) -> str:
        return (
            f"Compute them with `{self.flow_command()}` (OpenCV DIS), put the published flows there, or "
            "compute them on the fly with data.flow.source=dis"
        )

    def load_clip(
        self,
        i: int,
        offsets: Sequence[int],
        label_offsets: Sequence[int] = (),
        flow_pairs: Sequence[Pair] = (),
    ) -> Clip:
        """Read frames t−k for ``offsets``, the labels of ``label_offsets`` (those the dataset has) and the
        flows of ``flow_pairs`` from their files; each file once."""
        frames = {k: self.read_frame(self.frame_path(i, k)) for k in dict.fromkeys(offsets)}
        labels = {}
        for k in dict.fromkeys(label_offsets):
            p = self.label_path(i, k)
            if p is not None:
                labels[k] = self.read_label(p)
        flows = {}
        for a, b in dict.fromkeys(tuple(p) for p in flow_pairs):
            flows[(a, b)] = read_flow(self.flow_file(i, a, b), fix=self._flow_hint(), format=self.flow_format)
        return Clip(name=self.name(i), frames=frames, labels=labels, flows=flows)


def parse_frame_stem(stem: str) -> tuple[str, int] | None:
    """``<clip>_<digits>`` -> (clip, frame number), or None."""
    m = _FRAME_RE.match(stem)
    return (m["clip"], int(m["frame"])) if m else None


class ClipFolderDataset(ClipDataset):
    """Clips in the generic layout (module docstring). ``labels``: the current frame's label is read (and
    required); ``prev_labels``: t−1's too (required as well); ``flow_dir`` defaults to ``DIR/flows``."""

    title = "clip folder"
    dataset = "clip_folder"

    def __init__(
        self,
        root: str | Path,
        *,
        labels: bool = True,
        prev_labels: bool = False,
        flow_dir: str | Path | None = None,
        key: str = "data dir",
    ) -> None:
        self.root = Path(root)
        self.key = key
        self.has_labels = bool(labels)
        self.prev_labels = bool(prev_labels) and self.has_labels
        self.flow_dir = Path(flow_dir) if flow_dir else self.root / "flows"
        frame_dir = self.root / "frames"
        if not frame_dir.is_dir():
            raise FileNotFoundError(
                f"{key}={self.root}: no folder {frame_dir}. A clip folder holds "
                "frames/<clip>_<frame:06d>.png, labels/ and flows/ (src/data/datasets/clip_folder.py); "
                f"set {key} to such a folder."
            )
        clips: dict[str, dict[int, Path]] = {}
        bad = []
        for p in sorted(frame_dir.iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            parsed = parse_frame_stem(p.stem)
            if parsed is None:
                bad.append(p.name)
                continue
            clips.setdefault(parsed[0], {})[parsed[1]] = p
        if bad:
            raise ValueError(
                f"{key}={self.root}: {len(bad)} frame file name(s) are not <clip>_<frame number>, e.g. "
                f"{bad[:5]}; rename them (e.g. seq01_000019.png)"
            )
        if not clips:
            raise FileNotFoundError(f"{key}={self.root}: {frame_dir} holds no .png/.jpg frame")
        self._clips = sorted(clips)
        self._frames = clips
        self._t = {c: max(fr) for c, fr in clips.items()}
        self.label_dir = self.root / "labels"
        if self.has_labels and not self.label_dir.is_dir():
            raise FileNotFoundError(
                f"{key}={self.root}: no folder {self.label_dir} (train-id PNGs <clip>_<frame:06d>.png of the "
                "current frames); add it, or read the clips unlabelled (labels=false)"
            )

    def __len__(self) -> int:
        return len(self._clips)

    def clip(self, i: int) -> str:
        return self._clips[i]

    def current_frame(self, i: int) -> int:
        return self._t[self._clips[i]]

    def name(self, i: int) -> str:
        c = self._clips[i]
        return f"{c}_{self._t[c]:06d}"

    def frame_path(self, i: int, k: int) -> Path:
        c = self._clips[i]
        n = self._t[c] - k
        p = self._frames[c].get(n)
        return p if p is not None else self.root / "frames" / f"{c}_{n:06d}.png"

    def label_path(self, i: int, k: int) -> Path | None:
        if not self.has_labels or (k > 0 and not self.prev_labels):
            return None
        c = self._clips[i]
        return self.label_dir / f"{c}_{self._t[c] - k:06d}.png"

    def flow_path(self, i: int, a: int, b: int) -> Path:
        c = self._clips[i]
        t = self._t[c]
        return self.flow_dir / cityscapes_flow_name(c, t - a, t - b)

    def frames_hint(self) -> str:
        return (
            "A clip's current frame is its highest-numbered frame; it needs the earlier frames the methods "
            "read (t−1, and t−Δ, t−Δ−1 for the target with data.interval=Δ): add them or lower data.interval"
        )

    def flow_command(self) -> str:
        return f"python scripts/compute_flow.py clip_folder {self.root} --out {self.flow_dir}"

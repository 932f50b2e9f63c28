"""The video UDA LightningDataModule: labelled source clips + unlabelled target clips, labelled val clips.

Batches follow the video batch contract shared with the video methods (src/uda/video; video_uda.md §7
"Recommendations", udass.md §2.3), the current frame keeping the image pipeline's keys so that image methods
run unchanged:

- source S: ``img`` (t), ``gt``, ``img_prev`` (t−1), ``gt_prev`` (255 where the dataset has no t−1 label),
  ``flow`` (t -> t−1);
- target T, Δ = ``interval`` (udass.md §2.3 INTERVAL = 1): ``img`` (t), ``img_prev`` (t−1), ``img_k`` (t−Δ),
  ``img_k_prev`` (t−Δ−1); ``flow`` (t -> t−1), ``flow_k`` (t -> t−Δ), ``flow_k_prev`` (t−Δ -> t−Δ−1),
  ``flow_kk`` (t -> t−Δ−1) (TPS pairs, UDASS adds t -> t−2, video_uda.md §1.2); ``valid`` as the image
  pipeline makes it (1 inside the frame, 0 in the crop's padding, times the HRDA/MIC margins if configured);
  ``target_flows`` (the flows the configured method reads, src/train.py asks the method) keeps only those, so
  a run with TPS's published flows (no t -> t−Δ−1) starts as downloaded; on request also ``flow_k_fwd``
  (t−Δ -> t, the forward flow of the consistency mask, src/uda/video/tps.py), read from files or computed with
  DIS (``flow.forward: dis``, default: no reference publishes forward flows for its pairs);
- val: ``img``, ``img_prev``, ``flow`` (t -> t−1) at the network input resolution, ``gt`` at full resolution,
  ``name`` (video_uda.md §1.3 "Eval", udass.md §2.8).

Every frame of a clip goes through the image pipeline's steps and helpers (src/data/transforms.py: keep-ratio
resize, padding, the crop chosen on the current frame's label with the cat-max-ratio / rare-class retries,
flip, uint8 image tensors normalised on the device) with **one** crop window and **one** flip decision.
Flows are resized to the resized frames with :func:`resize_flow`, padded with 0, cropped with the frames and
flipped with :func:`flip_flow` (u negated: a mirrored flow points the other way; no reference flips clips in
its data pipeline, TPS's un-negated u is a quirk of its weak view only, ``uda.pseudo.flip_quirk``).
``flow.source: files`` reads the published ``*_int16_x10.npy`` flows (video_uda.md §2.2), or the KITTI
16-bit ``.png`` of the same name (UnifiedVideoDA's FlowFormer flows; ``flow.format``: ``auto`` by
extension, ``int16_x10``, ``kitti_png``); ``dis`` computes them in the data workers with OpenCV DIS
(video_uda.md §6) on the resized frames, at ``flow.dis_scale`` of their size with ``flow.dis_preset``. Only
the frames, labels and flows a split needs are read, each once.

Source preprocessing (``source_crop``, ``source_flip``): the image pipeline's random crop (cat-max-ratio
retries) and random flip of the source clip, or (``source_crop: false``) the whole frame resized to
``crop_size`` (h, w) and (``source_flip: false``) never flipped, as the video references (video_uda.md
§1.3: no crop, no flip; the ViT reference: the whole VIPER frame at 512×1024, udass.md §2.6.2).

Sampling, determinism and exact resume are the image data module's (src/data/datamodule.py): item i of the
training stream is a pure function of (seed, rank, i); rare-class sampling draws a class and a source clip
from the statistics of the clips' *current* frame labels (``stats_root/sample_class_stats.json``).
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from src.data.classes import IGNORE_INDEX
from src.data.datamodule import ShardSampler, UDADataModule, UDATrainDataset
from src.data.datasets.clip_folder import Clip, Pair
from src.data.flow import FLOW_FORMATS, compute_dis_flow, flip_flow, resize_flow
from src.data.rare_class_sampling import STATS_FILE, RareClassSampler
from src.data.transforms import TrainTransform, _pad_to, _resize, rescale_size, to_tensor, to_uint8_tensor

log = logging.getLogger(__name__)

FLOW_SOURCES = ("files", "dis")
FORWARD_SOURCES = ("dis", "files")


def target_keys(
    interval: int, flows_read: tuple[str, ...] | list[str] | None = None
) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Output key -> frame offset, and flow key -> (offset a, offset b), of a target clip (Δ = interval).

    ``flows_read``: the flow keys a method reads (None: the four of the batch contract, ``flow``, ``flow_k``,
    ``flow_k_prev``, ``flow_kk``); ``flow_k_fwd`` (t−Δ -> t) only when asked for.
    """
    d = int(interval)
    if d < 1:
        raise ValueError(f"data.interval must be >= 1 (Δ of the target clips, udass.md §2.3), got {interval}")
    frames = {"img": 0, "img_prev": 1, "img_k": d, "img_k_prev": d + 1}
    flows = {"flow": (0, 1), "flow_k": (0, d), "flow_k_prev": (d, d + 1), "flow_kk": (0, d + 1)}
    if flows_read is None:
        return frames, flows
    known = {**flows, "flow_k_fwd": (d, 0)}
    unknown = sorted(set(flows_read) - set(known))
    if unknown:
        raise ValueError(
            f"target flows {unknown} are not in the video batch contract; known: {sorted(known)}"
        )
    return frames, {k: known[k] for k in known if k in set(flows_read)}


SOURCE_FRAMES = {"img": 0, "img_prev": 1}
SOURCE_LABELS = {"gt": 0, "gt_prev": 1}
PAIR_FLOW = {"flow": (0, 1)}


class FlowOptions:
    """``data.flow``: where flows come from and how they are flipped (module docstring)."""

    def __init__(
        self,
        source: str = "files",
        dis_preset: str = "medium",
        dis_scale: float = 1.0,
        forward: str = "dis",
        format: str = "auto",
    ) -> None:
        if source not in FLOW_SOURCES:
            raise ValueError(f"data.flow.source must be one of {FLOW_SOURCES}, got {source!r}")
        if forward not in FORWARD_SOURCES:
            raise ValueError(f"data.flow.forward must be one of {FORWARD_SOURCES}, got {forward!r}")
        if format not in FLOW_FORMATS:
            raise ValueError(f"data.flow.format must be one of {FLOW_FORMATS}, got {format!r}")
        from src.data.flow import DIS_PRESETS

        if str(dis_preset).lower() not in DIS_PRESETS:
            raise ValueError(f"data.flow.dis_preset must be one of {sorted(DIS_PRESETS)}, got {dis_preset!r}")
        self.source = source
        self.dis_preset = str(dis_preset).lower()
        self.dis_scale = float(dis_scale)
        self.forward = forward
        self.format = format

    @property
    def from_files(self) -> bool:
        return self.source == "files"

    def file_pairs(self, pairs) -> tuple[tuple[int, int], ...]:
        """The pairs of ``pairs`` read from files: none with ``source: dis``; a forward pair (a > b: from an
        earlier frame to a later one) only with ``forward: files``."""
        if not self.from_files:
            return ()
        return tuple(
            p for p in dict.fromkeys(tuple(p) for p in pairs) if p[0] < p[1] or self.forward == "files"
        )


def _flow_tensor(flow: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)


def _clip_flows(
    clip: Clip,
    frames: dict[int, np.ndarray],
    pairs: set[tuple[int, int]],
    size: tuple[int, int],
    opts: FlowOptions,
) -> dict[tuple[int, int], torch.Tensor]:
    """Flows of ``pairs`` at ``size`` = (h, w) of the resized frames: loaded ones resized, or DIS on them."""
    out = {}
    for a, b in pairs:
        if (a, b) in clip.flows:
            f = _flow_tensor(clip.flows[(a, b)])
        elif not opts.from_files or (a > b and opts.forward == "dis"):
            f = _flow_tensor(compute_dis_flow(frames[a], frames[b], opts.dis_preset, opts.dis_scale))
        else:
            raise KeyError(f"clip {clip.name}: flow {a}->{b} was not loaded")
        out[(a, b)] = resize_flow(f, size)
    return out


def _check_sizes(clip: Clip) -> tuple[int, int]:
    h, w = clip.frames[0].shape[:2]
    for k, fr in clip.frames.items():
        if fr.shape[:2] != (h, w):
            raise ValueError(
                f"clip {clip.name}: frame t-{k} is {fr.shape[1]}x{fr.shape[0]} but frame t is {w}x{h}; "
                "all frames of a clip must have one size"
            )
    for k, lab in clip.labels.items():
        if lab.shape[:2] != (h, w):
            raise ValueError(
                f"clip {clip.name}: the label of frame t-{k} is {lab.shape[1]}x{lab.shape[0]} but the frame "
                f"is {w}x{h}; resize the label (nearest) to the frame size"
            )
    return h, w


class ClipTrainTransform:
    """The image pipeline's TrainTransform applied to a clip: one resize, crop window and flip for all frames,
    labels and flows (module docstring). ``frame_keys`` / ``label_keys`` / ``flow_keys`` name the outputs.

    ``crop=False``: no random crop, the whole (resized) frame is resized to ``crop_size`` (h, w), labels
    nearest, flows with their components scaled (the references' whole source frame, video_uda.md §1.3);
    ``flip=False``: never mirrored (no reference flips its clips)."""

    def __init__(
        self,
        *,
        crop_size: tuple[int, int],
        scale: tuple[int, int] | None,
        cat_max_ratio: float,
        flow: FlowOptions,
        uint8: bool = True,
        crop: bool = True,
        flip: bool = True,
    ) -> None:
        self.base = TrainTransform(crop_size=tuple(crop_size), scale=scale, cat_max_ratio=cat_max_ratio)
        self.flow, self.uint8 = flow, bool(uint8)
        self.crop, self.flip = bool(crop), bool(flip)

    def __call__(
        self,
        clip: Clip,
        rng: np.random.Generator,
        *,
        frame_keys: dict[str, int],
        flow_keys: dict[str, tuple[int, int]],
        label_keys: dict[str, int] | None = None,
        valid: np.ndarray | None = None,
        with_valid: bool = False,
        rcs_class: int | None = None,
        rcs_min_pixels: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        base = self.base
        h, w = _check_sizes(clip)
        label_keys = label_keys or {}
        # 1. resize every frame (and its label; the current frame also its valid mask) to the pipeline scale
        frames, labels = dict(clip.frames), dict(clip.labels)
        vmask = valid
        if base.scale is not None:
            size = rescale_size(w, h, tuple(base.scale))
            for k in frames:
                masks = [labels[k]] if k in labels else []
                if k == 0 and vmask is not None:
                    masks.append(vmask)
                frames[k], masks = _resize(frames[k], masks, size)
                if k in labels:
                    labels[k] = masks.pop(0)
                if k == 0 and vmask is not None:
                    vmask = masks.pop(0)
        ch, cw = base.crop_size
        if not self.crop:  # the whole frame at the crop size (h, w): no padding, no crop window
            for k in frames:
                masks = [labels[k]] if k in labels else []
                if k == 0 and vmask is not None:
                    masks.append(vmask)
                frames[k], masks = _resize(frames[k], masks, (cw, ch))
                if k in labels:
                    labels[k] = masks.pop(0)
                if k == 0 and vmask is not None:
                    vmask = masks.pop(0)
        rh, rw = frames[0].shape[:2]
        flows = _clip_flows(clip, frames, set(flow_keys.values()), (rh, rw), self.flow)
        # 2. pad to the crop size (image 0, label 255, valid 0, flow 0), as mmseg's Pad
        for k in frames:
            masks, pads = ([labels[k]], [base.ignore_index]) if k in labels else ([], [])
            if k == 0 and vmask is not None:
                masks, pads = [*masks, vmask], [*pads, 0]
            frames[k], masks = _pad_to(frames[k], masks, (ch, cw), pads)
            if k in labels:
                labels[k] = masks.pop(0)
            if k == 0 and vmask is not None:
                vmask = masks.pop(0)
        ph, pw = frames[0].shape[:2]
        if (ph, pw) != (rh, rw):
            flows = {p: F.pad(f, (0, pw - rw, 0, ph - rh)) for p, f in flows.items()}
        # 3. one crop window, chosen on the current frame's label (cat-max-ratio / rare-class retries)
        if self.crop:
            y0, x0, ch, cw = base._choose_box((ph, pw), labels.get(0), rng, rcs_class, rcs_min_pixels)
        else:
            y0, x0 = 0, 0
        crop = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        frames = {k: f[crop] for k, f in frames.items()}
        labels = {k: lab[crop] for k, lab in labels.items()}
        flows = {p: f[:, crop[0], crop[1]] for p, f in flows.items()}
        if with_valid:
            if vmask is not None:
                vmask = vmask[crop]
            else:  # the image pipeline's valid: 1 inside the frame, 0 in the padding
                vmask = np.zeros((ch, cw), np.uint8)
                vmask[: max(min(rh - y0, ch), 0), : max(min(rw - x0, cw), 0)] = 1
        # 4. one flip decision for the clip
        if self.flip and rng.random() < base.flip_p:
            frames = {k: cv2.flip(np.ascontiguousarray(f), 1) for k, f in frames.items()}
            labels = {k: cv2.flip(np.ascontiguousarray(lab), 1) for k, lab in labels.items()}
            flows = {p: flip_flow(f) for p, f in flows.items()}
            if with_valid:
                vmask = cv2.flip(np.ascontiguousarray(vmask), 1)
        out: dict[str, torch.Tensor] = {}
        for key, k in frame_keys.items():
            out[key] = self._image(frames[k])
        for key, k in label_keys.items():
            out[key] = self._label(labels[k] if k in labels else np.full((ch, cw), IGNORE_INDEX, np.uint8))
        for key, p in flow_keys.items():
            out[key] = flows[p].contiguous()
        if with_valid:
            out["valid"] = torch.from_numpy(np.ascontiguousarray(vmask))
        return out

    def _image(self, image: np.ndarray) -> torch.Tensor:
        return to_uint8_tensor(np.ascontiguousarray(image)) if self.uint8 else to_tensor(image)

    def _label(self, label: np.ndarray) -> torch.Tensor:
        lab = np.ascontiguousarray(label)
        return torch.from_numpy(lab) if self.uint8 else torch.from_numpy(lab.astype(np.int64))


class ClipEvalTransform:
    """Validation: frames t, t−1 resized to the network input (``scale``), the flow t -> t−1 at that size,
    the current frame's label at full resolution (video_uda.md §1.3 "Eval")."""

    def __init__(self, *, scale: tuple[int, int] | None, flow: FlowOptions, uint8: bool = True) -> None:
        self.scale, self.flow, self.uint8 = scale, flow, bool(uint8)

    def __call__(self, clip: Clip) -> dict[str, Any]:
        h, w = _check_sizes(clip)
        frames = dict(clip.frames)
        if self.scale is not None:
            size = rescale_size(w, h, tuple(self.scale))
            frames = {k: _resize(f, [], size)[0] for k, f in frames.items()}
        rh, rw = frames[0].shape[:2]
        flows = _clip_flows(clip, frames, {(0, 1)}, (rh, rw), self.flow)
        img = to_uint8_tensor if self.uint8 else to_tensor
        out: dict[str, Any] = {
            "img": img(np.ascontiguousarray(frames[0])),
            "img_prev": img(np.ascontiguousarray(frames[1])),
            "flow": flows[(0, 1)].contiguous(),
        }
        if 0 in clip.labels:
            lab = np.ascontiguousarray(clip.labels[0])
            out["gt"] = torch.from_numpy(lab) if self.uint8 else torch.from_numpy(lab.astype(np.int64))
        out["name"] = clip.name
        return out


class VideoTrainDataset(UDATrainDataset):
    """Item i = {"source": S, "target": T} (module docstring) drawn from default_rng([seed, rank, i]) with the
    image pipeline's draws (:class:`~src.data.datamodule.UDATrainDataset`: the rare-class draw or a uniform
    source clip, its crop and flip, then a uniform target clip and its crop and flip); items are clips."""

    def __init__(
        self,
        *,
        source,
        target=None,
        source_transform: ClipTrainTransform,
        target_transform: ClipTrainTransform,
        interval: int = 1,
        rcs: RareClassSampler | None = None,
        seed: int = 0,
        rank: int = 0,
        target_pseudo_margins: tuple[int, int, int, int] | None = None,
        target_flows: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(source=source, target=target, source_transform=source_transform,
                         target_transform=target_transform, rcs=rcs, seed=seed, rank=rank,
                         target_pseudo_margins=target_pseudo_margins)  # fmt: skip
        self.target_frames, self.target_flows = target_keys(interval, target_flows)
        opts = source_transform.flow
        self.source_labels = SOURCE_LABELS if source.prev_labels else {"gt": 0}
        self.source_pairs = opts.file_pairs(PAIR_FLOW.values())
        self.target_pairs = opts.file_pairs(self.target_flows.values())

    def source_item(self, si: int, rng: np.random.Generator, rcs_class: int | None, rcs_min: float) -> dict:
        clip = self.source.load_clip(si, (0, 1), tuple(self.source_labels.values()), self.source_pairs)
        return self.source_transform(clip, rng, frame_keys=SOURCE_FRAMES, flow_keys=PAIR_FLOW,
                                     label_keys=SOURCE_LABELS, rcs_class=rcs_class,
                                     rcs_min_pixels=rcs_min)  # fmt: skip

    def target_item(self, ti: int, rng: np.random.Generator) -> dict:
        offsets = tuple(dict.fromkeys(self.target_frames.values()))
        clip = self.target.load_clip(ti, offsets, (), self.target_pairs)
        return self.target_transform(clip, rng, frame_keys=self.target_frames, flow_keys=self.target_flows,
                                     valid=self.margin_mask(*clip.frames[0].shape[:2]),
                                     with_valid=True)  # fmt: skip


class VideoEvalDataset(Dataset):
    def __init__(self, base, transform: ClipEvalTransform) -> None:
        self.base, self.transform = base, transform
        self.pairs = transform.flow.file_pairs(PAIR_FLOW.values())

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.transform(self.base.load_clip(i, (0, 1), (0,), self.pairs))


class VideoUDADataModule(UDADataModule):
    """Pairs labelled source clips, unlabelled target clips and labelled validation clips.

    Constructed like the image :class:`UDADataModule` (the same keys: ``source``/``target``/``val`` dataset
    factories, ``crop_size``, ``batch_size``, scales, ``cat_max_ratio``, ``target_pseudo_margins``,
    ``eval_subsets``, ``prepare``, ``rcs``, ``seed``) plus ``interval`` (Δ), ``flow`` (:class:`FlowOptions`
    keys), ``target_flows`` (the target flow keys the method reads, given by src/train.py; None: the four of
    the batch contract), ``source_crop`` and ``source_flip`` (module docstring). The datasets are clip
    datasets (src/data/datasets/clip_folder.py: ``load_clip``, ``verify``, ``stats_root``, ``index_of``);
    :meth:`setup` checks that every frame, label and flow they need exists. ``streaming=True`` reads the three
    splits from LitData chunks written by scripts/pack_dataset.py (src/data/streaming.py
    :class:`~src.data.streaming.StreamingClipSplit`, the same clips and training stream; the target chunks
    must be packed for this ``interval``)."""

    def __init__(
        self,
        *,
        interval: int = 1,
        flow: dict | None = None,
        video: bool = True,
        streaming: bool = False,
        target_flows: list[str] | tuple[str, ...] | None = None,
        source_crop: bool = True,
        source_flip: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(streaming=streaming, **kwargs)
        self.interval = int(interval)
        self.target_flows_read = None if target_flows is None else tuple(target_flows)
        self.target_frames, self.target_flows = target_keys(self.interval, self.target_flows_read)
        self.flow = FlowOptions(**dict(flow or {}))
        if "flow_k_fwd" in self.target_flows and self.flow.from_files and self.flow.forward == "dis":
            log.warning(
                "uda.pseudo.consistency compares the backward flow t -> t-%d of the files with a forward "
                "flow of OpenCV DIS (data.flow.forward=dis): their disagreement also rejects pixels that are "
                "not occluded (see train/tps_consistent); forward flows of the same estimator: "
                "data.flow.forward=files",
                self.interval,
            )
        # the image pipeline's settings: scales, crop retries and uint8 (device-side normalisation) or float
        src, tgt, val = self.source_transform, self.target_transform, self.val_transform
        crop = self.crop_size
        self.source_transform = ClipTrainTransform(
            crop_size=crop, scale=src.scale, cat_max_ratio=src.cat_max_ratio, flow=self.flow,
            uint8=getattr(src, "uint8", False), crop=source_crop, flip=source_flip,
        )  # fmt: skip
        self.target_transform = ClipTrainTransform(
            crop_size=crop, scale=tgt.scale, cat_max_ratio=tgt.cat_max_ratio, flow=self.flow,
            uint8=getattr(tgt, "uint8", False),
        )  # fmt: skip
        self.val_transform = ClipEvalTransform(
            scale=val.scale, flow=self.flow, uint8=getattr(val, "uint8", False)
        )
        self._verified: set[str] = set()

    def split_needs(self, split: str, ds: Any) -> tuple[tuple[int, ...], tuple[int, ...], tuple[Pair, ...]]:
        """(frame offsets, label offsets, flow pairs) every clip of ``split`` is read with (training and
        validation): what :meth:`setup` checks and scripts/pack_dataset.py packs."""
        if split == "target":
            pairs = self.flow.file_pairs(self.target_flows.values())
            return tuple(dict.fromkeys(self.target_frames.values())), (), pairs
        labels = (0, 1) if split == "source" and ds.prev_labels else (0,)
        return (0, 1), labels, self.flow.file_pairs([(0, 1)])

    def _open(self, split: str, factory: Any) -> Any:
        """The clip dataset of a split, or its packed chunks when streaming (checked against this run's
        ``interval`` and ``flow.source``)."""
        if factory is None or not self.streaming:
            return super()._open(split, factory)
        from src.data.streaming import open_clip_split

        interval = self.interval if split == "target" else None
        return open_clip_split(self.streaming_dir, split, interval=interval, flow_source=self.flow.source,
                               **self.streaming_options)  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        for split, ds in (("val", self.val), ("source", self.source), ("target", self.target)):
            if split in self._verified or ds is None:
                continue
            if split == "val" and not ds.has_labels:
                raise ValueError(f"the validation clips ({ds.root}) must be read with labels (labels: true)")
            if hasattr(ds, "flow_format"):
                ds.flow_format = self.flow.format
            ds.verify(*self.split_needs(split, ds))
            self._verified.add(split)

    def rare_class_sampler(self) -> RareClassSampler | None:
        if not self.rcs_cfg.get("enabled", False):
            return None
        root = getattr(self.source, "stats_root", self.source.root)
        if self.streaming and not (root / STATS_FILE).is_file():
            raise FileNotFoundError(
                f"rare class sampling needs the statistics of the source clips, which the packed split "
                f"{self.source.url} does not hold: run `python scripts/prepare_data.py {self.source.dataset} "
                f"<the source clips' folder>`, then pack again, or turn it off with uda.rcs.enabled=false"
            )
        if not (root / STATS_FILE).is_file():
            raise FileNotFoundError(
                f"rare class sampling needs {root / STATS_FILE} (class statistics of the source clips' "
                f"current frames), which does not exist: run `python scripts/prepare_data.py "
                f"{self.source.dataset} {self.source.root}`, or turn it off with uda.rcs.enabled=false"
            )
        kw = {k: v for k, v in self.rcs_cfg.items() if k != "enabled"}
        return RareClassSampler.from_root(root, **kw)

    def train_dataset(self, rank: int = 0) -> VideoTrainDataset:
        if self.source is None:
            self.setup("fit")
        return VideoTrainDataset(
            source=self.source,
            target=self.target,
            source_transform=self.source_transform,
            target_transform=self.target_transform,
            interval=self.interval,
            rcs=self.rare_class_sampler(),
            seed=self.seed,
            rank=rank,
            target_pseudo_margins=self.target_pseudo_margins,
            target_flows=self.target_flows_read,
        )

    def val_dataloader(self) -> DataLoader:
        if self.val is None:
            self.setup("validate")
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if world > len(self.val):  # a rank without a single clip would stall the others' collectives
            raise ValueError(f"{len(self.val)} validation clips cannot be split across {world} ranks")
        return DataLoader(
            VideoEvalDataset(self.val, self.val_transform),
            batch_size=self.val_batch_size,
            sampler=ShardSampler(len(self.val), rank=rank, world_size=world),
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
        )

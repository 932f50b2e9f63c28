"""The UDA LightningDataModule: labelled source + unlabelled target for training, labelled val.

Sampling (daformer_mic.md §1.7): each training item pairs one source crop with one target crop drawn
uniformly and independently. Without rare-class sampling the source image is drawn uniformly; with it,
a class c ~ P(c) is drawn first, then a file holding > min_pixels of c, and the crop is retried until it
holds > min_pixels * min_crop_ratio pixels of c.

Determinism and exact resume: item `i` of the training stream is a pure function of (seed, rank, i):
its own numpy generator drives the choice of files, crops and flips. The sampler yields the stream
indices from `global_step * batch_size` on, so a resumed run reads exactly the data the uninterrupted
run would have read, whatever the number of workers. (The reference shuffles the |S|x|T| pair list
instead; drawing pairs independently is the same distribution without the giant index.)

Under DDP each rank reads its own stream (rank in the seed); validation is split across ranks by
`ShardSampler` (rank r evaluates images r, r + W, ...: every image exactly once, no padding, so the
confusion matrix summed over ranks counts no image twice).

`streaming=True` reads the three splits from LitData chunks written by scripts/pack_dataset.py under
`streaming_dir` (a local folder or an object-store URL) instead of the files (src/data/streaming.py):
same items, same indices, same sampling, so the same training stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from src.data.check import check_label_ids
from src.data.rare_class_sampling import RareClassSampler
from src.data.transforms import EvalTransform, TrainTransform, collate, normalize_batch

log = logging.getLogger(__name__)


def pseudo_margin_mask(height: int, width: int, margins: tuple[int, int, int, int]) -> np.ndarray:
    """HRDA/MIC crop-aware pseudo-label margins (top, bottom, left, right) at full resolution:
    1 = the teacher's pseudo-label may be trained on, 0 = border artefact region (daformer_mic.md §1.5)."""
    top, bottom, left, right = margins
    m = np.ones((height, width), np.uint8)
    m[:top] = 0
    if bottom:
        m[height - bottom :] = 0
    m[:, :left] = 0
    if right:
        m[:, width - right :] = 0
    return m


class UDATrainDataset(Dataset):
    """Item i = {"source": {img, gt, valid}, "target": {img, valid[, gt]}} drawn from rng(seed, rank, i)."""

    def __init__(
        self,
        *,
        source,
        target=None,
        source_transform: TrainTransform,
        target_transform: TrainTransform,
        rcs: RareClassSampler | None = None,
        seed: int = 0,
        rank: int = 0,
        target_pseudo_margins: tuple[int, int, int, int] | None = None,
        num_classes: int | None = None,
        classes_file: str | None = None,
        target_diagnostic_labels: bool = False,
    ) -> None:
        self.source, self.target = source, target
        self.num_classes, self.classes_file = num_classes, classes_file
        self.target_diagnostic_labels = bool(target_diagnostic_labels)
        self.source_transform, self.target_transform = source_transform, target_transform
        self.rcs = rcs
        self.seed, self.rank = seed, rank
        self.target_pseudo_margins = target_pseudo_margins

    def __len__(self) -> int:  # the stream is unbounded; the sampler decides how much is read
        return 2**62

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.rank, i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        """The draws of item i, in this order from one generator: the source index (a rare-class draw, or
        uniform), the source item's augmentation, the target index (uniform), the target's augmentation."""
        rng = self.rng(i)
        rcs_class, rcs_min = None, 0.0
        if self.rcs is not None:
            rcs_class, key = self.rcs.sample(rng)
            si = self.source.index_of(key)
            rcs_min = self.rcs.min_crop_pixels
        else:
            si = int(rng.integers(len(self.source)))
        item = {"source": self.source_item(si, rng, rcs_class, rcs_min)}
        if self.target is not None:
            item["target"] = self.target_item(int(rng.integers(len(self.target))), rng)
        return item

    def margin_mask(self, height: int, width: int) -> np.ndarray | None:
        """The target's pseudo-label margin mask (``target_pseudo_margins``), or None."""
        if self.target_pseudo_margins is None:
            return None
        return pseudo_margin_mask(height, width, tuple(self.target_pseudo_margins))

    def source_item(self, si: int, rng: np.random.Generator, rcs_class: int | None, rcs_min: float) -> dict:
        image, label = self.source.load(si)
        check_ids(self.source, si, label, self.num_classes, self.classes_file)
        return self.source_transform(image, label, rng, rcs_class=rcs_class, rcs_min_pixels=rcs_min)

    def target_item(self, ti: int, rng: np.random.Generator) -> dict:
        image, label = self.target.load(ti)  # target labels are never trained on
        diag = label if self.target_diagnostic_labels else None  # only strategy diagnostics read `diag_gt`
        return self.target_transform(
            image, None, rng, valid=self.margin_mask(*image.shape[:2]), diag_label=diag
        )


def check_ids(dataset: Any, i: int, label: np.ndarray | None, num_classes: int | None,
              classes_file: str | None = None) -> None:  # fmt: skip
    """DataError naming the file when item i's label holds an id >= num_classes other than 255; skipped for
    a dataset whose labels were all checked at start-up (``checked_num_classes``)."""
    if label is None or num_classes is None:
        return
    checked = getattr(dataset, "checked_num_classes", None)
    if checked is not None and checked <= num_classes:
        return
    items = getattr(dataset, "items", None)
    try:
        where = items[i][1] if items is not None else None
    except (IndexError, TypeError):
        where = None
    if where is None:
        where = f"{dataset.name(i)} (item {i} of {type(dataset).__name__} {getattr(dataset, 'root', '')})"
    check_label_ids(label, num_classes, where, classes_file)


class EvalDataset(Dataset):
    def __init__(self, base, transform: EvalTransform, *, num_classes: int | None = None,
                 classes_file: str | None = None) -> None:  # fmt: skip
        self.base, self.transform = base, transform
        self.num_classes, self.classes_file = num_classes, classes_file

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, label = self.base.load(i)
        check_ids(self.base, i, label, self.num_classes, self.classes_file)
        out = self.transform(image, label)
        out["name"] = self.base.name(i)
        return out


class StreamSampler(Sampler[int]):
    """Yields start, start+1, ..., start+length-1 (indices into the training stream)."""

    def __init__(self, start: int, length: int) -> None:
        self.start, self.length = start, length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.start + self.length))

    def __len__(self) -> int:
        return self.length


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world_size, ... < length: disjoint shards covering every index once.

    Unlike torch's DistributedSampler it never pads a shard with repeated indices, which would count the
    repeated validation images twice in the confusion matrix; shards differ in length by at most one.
    """

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


class UDADataModule(pl.LightningDataModule):
    """Pairs a labelled source, an unlabelled target and a labelled validation set.

    `source`, `target`, `val` are callables returning dataset objects with `__len__`, `load(i) ->
    (image, label)`, `name(i)`, and for rare-class sampling `root`, `index_of(key)` (Hydra
    `_partial_: true` configs). `prepare` is an optional callable run once before (e.g. the synthetic
    data generator).
    """

    def __init__(
        self,
        *,
        source: Callable[[], Any],
        target: Callable[[], Any] | None,
        val: Callable[[], Any],
        num_classes: int = 19,
        class_names: list[str] | None = None,
        classes_file: str | None = None,
        check: bool = True,
        crop_size: tuple[int, int] | int = (512, 512),
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 2,
        persistent_workers: bool = False,
        source_scale: tuple[int, int] | None = None,
        target_scale: tuple[int, int] | None = None,
        val_scale: tuple[int, int] | None = None,
        cat_max_ratio: float = 0.75,
        target_pseudo_margins: tuple[int, int, int, int] | None = None,
        target_diagnostic_labels: bool = False,
        eval_subsets: list[str] | None = None,
        prepare: Callable[[], Any] | None = None,
        rcs: dict | None = None,
        seed: int = 0,
        streaming: bool = False,
        streaming_dir: str | None = None,
        streaming_cache_dir: str | None = None,
        streaming_cache_chunks: bool = True,
        streaming_max_cache_size: str | int | None = None,
        streaming_storage_options: dict | None = None,
        **_: Any,
    ) -> None:
        super().__init__()
        self._source_fn, self._target_fn, self._val_fn = source, target, val
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else None
        self.classes_file = None if classes_file in (None, "", "null", "None") else str(classes_file)
        self.check = bool(check)
        crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.crop_size = crop
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        # Keep the validation workers alive between evaluations (they are restarted at every validation
        # otherwise); the training loader is one long epoch either way.
        self.persistent_workers = bool(persistent_workers) and num_workers > 0
        # uint8 batches: images and labels stay uint8 up to the device, where `on_after_batch_transfer`
        # normalises them (src/data/transforms.py "uint8 batches").
        self.source_transform = TrainTransform(
            crop_size=crop, scale=_opt_tuple(source_scale), cat_max_ratio=cat_max_ratio, uint8=True
        )
        self.target_transform = TrainTransform(
            crop_size=crop, scale=_opt_tuple(target_scale), cat_max_ratio=1.0, uint8=True
        )
        self.val_transform = EvalTransform(scale=_opt_tuple(val_scale), uint8=True)
        self.target_pseudo_margins = _opt_tuple(target_pseudo_margins)
        # The target's own labels in the training batch as `diag_gt`, read only by the strategy diagnostics
        # (train/pseudo_precision: how often the kept pseudo-labels are right); never by a loss.
        self.target_diagnostic_labels = bool(target_diagnostic_labels)
        self.eval_subsets = list(eval_subsets or ["all"])
        self._prepare = prepare
        self.rcs_cfg = dict(rcs or {})
        self.seed = seed
        self.streaming = bool(streaming)
        self.streaming_dir = None if streaming_dir is None else str(streaming_dir)
        self.streaming_options = {
            "cache_dir": None if streaming_cache_dir is None else str(streaming_cache_dir),
            "cache_chunks": bool(streaming_cache_chunks),
            "max_cache_size": streaming_max_cache_size,
            "storage_options": _plain(streaming_storage_options) or None,
        }
        self.source = self.target = self.val = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 batches (src/data/transforms.py): on the device, images become the ImageNet-normalised
        input in the module's float dtype (float32 unless a `*-true` precision converted the module) and
        labels int64. Lightning calls this hook of the data module after each host-to-device copy."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        dtype = getattr(module, "dtype", torch.float32)
        return normalize_batch(batch, dtype if dtype.is_floating_point else torch.float32)

    def prepare_data(self) -> None:
        if self._prepare is not None and not self.streaming:  # streaming reads packed chunks, not the files
            self._prepare()

    def _open(self, split: str, factory: Callable[[], Any] | None) -> Any:
        """The dataset of a split: the configured one, or its packed chunks when streaming."""
        if factory is None:
            return None
        if not self.streaming:
            return factory()
        from src.data.streaming import open_split

        return open_split(self.streaming_dir, split, **self.streaming_options)

    def setup(self, stage: str | None = None) -> None:
        """Open the splits (validation first) and check each one's files at start-up (`check_split`)."""
        if self.val is None:
            self.val = self.check_split(self._open("val", self._val_fn))
        if stage in (None, "fit") and self.source is None:
            self.source = self.check_split(self._open("source", self._source_fn))
            self.target = self.check_split(self._open("target", self._target_fn))

    def check_split(self, dataset: Any) -> Any:
        """A dataset with a start-up check (the folder dataset: every file's header, end, size, label depth
        and ids, cached; src/data/check.py) runs it here, in the main process, before any worker starts."""
        if self.check and not self.streaming and hasattr(dataset, "check"):
            dataset.check(self.num_classes, self.classes_file)
        return dataset

    def ensure_class_stats(self) -> None:
        """The source split's rare-class statistics, computed on first use when it can (the folder dataset:
        from the checked labels and the run's classes; written again when the labels change)."""
        if self.source is None:
            self.setup("fit")
        if not self.streaming and hasattr(self.source, "ensure_class_stats"):
            self.source.ensure_class_stats(self.num_classes, self.classes_file)

    def rare_class_sampler(self) -> RareClassSampler | None:
        if not self.rcs_cfg.get("enabled", False):
            return None
        self.ensure_class_stats()
        kw = {k: v for k, v in self.rcs_cfg.items() if k != "enabled"}
        return RareClassSampler.from_root(self.source.root, **kw)

    def train_dataset(self, rank: int = 0) -> UDATrainDataset:
        if self.source is None:
            self.setup("fit")
        return UDATrainDataset(
            source=self.source,
            target=self.target,
            source_transform=self.source_transform,
            target_transform=self.target_transform,
            rcs=self.rare_class_sampler(),
            seed=self.seed,
            rank=rank,
            target_pseudo_margins=self.target_pseudo_margins,
            target_diagnostic_labels=self.target_diagnostic_labels,
            num_classes=self.num_classes,
            classes_file=self.classes_file,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        step = trainer.global_step if trainer is not None else 0
        max_steps = trainer.max_steps if trainer is not None and trainer.max_steps > 0 else 1
        rank = trainer.global_rank if trainer is not None else 0
        remaining = max(max_steps - step, 1)
        sampler = StreamSampler(step * self.batch_size, remaining * self.batch_size)
        return DataLoader(
            self.train_dataset(rank),
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )

    def val_dataloader(self) -> DataLoader:
        if self.val is None:
            self.setup("validate")
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if world > len(self.val):  # a rank without a single image would stall the others' collectives
            raise ValueError(f"{len(self.val)} validation images cannot be split across {world} ranks")
        return DataLoader(
            EvalDataset(
                self.val, self.val_transform, num_classes=self.num_classes, classes_file=self.classes_file
            ),
            batch_size=self.val_batch_size,
            sampler=ShardSampler(len(self.val), rank=rank, world_size=world),
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def _opt_tuple(v):
    return None if v is None else tuple(v)


def _plain(v: Any) -> Any:
    """A config node (OmegaConf DictConfig / ListConfig) as plain dicts and lists."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(v, (DictConfig, ListConfig)):
        return OmegaConf.to_container(v, resolve=True)
    return dict(v) if isinstance(v, dict) else v

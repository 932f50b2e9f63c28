"""Dashboard callbacks: validation per-class IoU table / bar chart / confusion matrix, and throughput.

`ValidationDashboard` (issue 9, W&B dashboards). At the end of every validation it reads the student's
confusion matrix (the torchmetrics metric of `UDAModule`, summed over DDP ranks; torchmetrics caches the
computed value, so the module's own `compute()` right after costs nothing) and, on rank 0:

- W&B: `val/per_class_iou` (a `wandb.Table` of class, IoU % and the teacher's IoU % when evaluated),
  `val/per_class_iou_chart` (a bar chart of that table), `val/confusion_matrix` (W&B's confusion-matrix
  chart, built from the counts directly: no per-pixel lists) and `val/confusion_matrix_image` (the
  row-normalised matrix as a heat map).
- Without a W&B logger (e.g. `logger=csv`, whose metrics.csv already holds `val/IoU/<class>`):
  `<dirpath>/step<NNNNNN>_confusion.csv` (counts, rows = ground truth) and `..._confusion.png`.
- Without any logger: nothing.

`Throughput` logs `train/samples_per_sec` (one sample = one training item: a source crop and, for UDA
methods, a target crop; times the number of ranks) and `train/sec_per_step`, averaged over the last
`window` steps. A step's time runs from the end of the previous step to the end of this one, so it includes
data loading; the first step after the start or a validation is timed from its own start.
"""

from __future__ import annotations

import csv
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from src.metrics.miou import per_class_iou
from src.utils.visualize import confusion_image, save_png


def _is_wandb(logger: Any) -> bool:
    return type(logger).__name__ == "WandbLogger"


def _computed_confmat(metric: Any) -> torch.Tensor | None:
    """The metric's confusion matrix, or None when it saw no batch since its last reset."""
    if metric is None or int(getattr(metric, "update_count", getattr(metric, "_update_count", 0))) == 0:
        return None
    return metric.compute().detach().cpu()


class ValidationDashboard(pl.Callback):
    """Per-class IoU table + bar chart and confusion matrix at every validation (W&B, or CSV/PNG files).

    Args:
        dirpath: folder of the CSV / PNG confusion matrices when no W&B logger is attached (default
            `<trainer.default_root_dir>/val_dashboard`).
        confusion_matrix: log / write the confusion matrix.
        per_class_table: log the per-class IoU table and bar chart (W&B only).
    """

    def __init__(
        self, *, dirpath: str | None = None, confusion_matrix: bool = True, per_class_table: bool = True
    ) -> None:
        super().__init__()
        self.dirpath = dirpath
        self.confusion_matrix = bool(confusion_matrix)
        self.per_class_table = bool(per_class_table)
        self._wandb: list[Any] = []
        self._file_dir: Path | None = None
        self.written: list[Path] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        loggers = list(trainer.loggers)
        self._wandb = [lg for lg in loggers if _is_wandb(lg)]
        self._file_dir = None
        if loggers and not self._wandb:
            self._file_dir = Path(self.dirpath or Path(trainer.default_root_dir) / "val_dashboard")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks run before the module's hook (which computes, summarises and resets the metric).
        if trainer.sanity_checking or not (self._wandb or self._file_dir is not None):
            return
        cm = _computed_confmat(getattr(pl_module, "val_confmat", None))  # every rank: compute() syncs
        if cm is None:
            return
        teacher_cm = None
        if getattr(pl_module, "eval_cfg", {}).get("teacher", True):
            teacher_cm = _computed_confmat(getattr(pl_module, "val_confmat_teacher", None))
        if not trainer.is_global_zero:
            return
        names = list(getattr(pl_module, "class_names", None) or [str(i) for i in range(cm.shape[0])])
        step = trainer.global_step
        if self._file_dir is not None and self.confusion_matrix:
            self.written += self.write_files(cm, names, self._file_dir / f"step{step:06d}_confusion")
        for lg in self._wandb:
            lg.log_metrics(self.wandb_media(cm, names, teacher_cm), step=step)

    def wandb_media(
        self, cm: torch.Tensor, names: list[str], teacher_cm: torch.Tensor | None = None
    ) -> dict[str, Any]:
        import wandb

        media: dict[str, Any] = {}
        iou = per_class_iou(cm).numpy() * 100.0
        t_iou = per_class_iou(teacher_cm).numpy() * 100.0 if teacher_cm is not None else None
        if self.per_class_table:
            cols = ["class", "IoU"] + (["teacher IoU"] if t_iou is not None else [])
            rows = []
            for i, n in enumerate(names):
                row = [n, None if np.isnan(iou[i]) else round(float(iou[i]), 2)]
                if t_iou is not None:
                    row.append(None if np.isnan(t_iou[i]) else round(float(t_iou[i]), 2))
                rows.append(row)
            table = wandb.Table(columns=cols, data=rows)
            media["val/per_class_iou"] = table
            chart_rows = [[r[0], r[1]] for r in rows if r[1] is not None]
            media["val/per_class_iou_chart"] = wandb.plot.bar(
                wandb.Table(columns=["class", "IoU"], data=chart_rows), "class", "IoU",
                title="student per-class IoU (%)",
            )  # fmt: skip
        if self.confusion_matrix:
            counts = cm.numpy()
            data = [
                [names[i], names[j], int(counts[i, j])] for i in range(len(names)) for j in range(len(names))
            ]
            media["val/confusion_matrix"] = wandb.plot_table(
                "wandb/confusion_matrix/v1",
                wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=data),
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": "student confusion matrix (pixels)"},
            )
            media["val/confusion_matrix_image"] = wandb.Image(
                confusion_image(counts), caption="rows = ground truth, columns = prediction, row-normalised"
            )
        return media

    @staticmethod
    def write_files(cm: torch.Tensor, names: list[str], stem: Path) -> list[Path]:
        """`<stem>.csv` (pixel counts, rows = ground truth, header = predicted class) and `<stem>.png`."""
        stem.parent.mkdir(parents=True, exist_ok=True)
        counts = cm.numpy().astype(np.int64)
        csv_path = stem.with_suffix(".csv")
        with csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ground truth \\ prediction", *names])
            for n, row in zip(names, counts):
                w.writerow([n, *row.tolist()])
        png = save_png(confusion_image(counts), stem.with_suffix(".png"))
        return [csv_path, png]


class Throughput(pl.Callback):
    """`train/samples_per_sec` and `train/sec_per_step` over the last `window` steps (see the module doc)."""

    def __init__(self, *, window: int = 20) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self._times: deque[float] = deque(maxlen=self.window)
        self._samples: deque[int] = deque(maxlen=self.window)
        self._last_end: float | None = None
        self._start: float | None = None

    def _pause(self, *_: Any) -> None:
        self._last_end = None

    on_validation_start = _pause
    on_train_start = _pause

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        now = time.perf_counter()
        begin = self._last_end if self._last_end is not None else self._start
        self._last_end = now
        if begin is None:
            return
        self._times.append(max(now - begin, 1e-9))
        self._samples.append(_batch_size(batch) * max(1, int(trainer.world_size)))
        sec = sum(self._times) / len(self._times)
        pl_module.log_dict(
            {"train/samples_per_sec": sum(self._samples) / sum(self._times), "train/sec_per_step": sec},
            on_step=True, on_epoch=False, batch_size=1,
        )  # fmt: skip


def _batch_size(batch: Any) -> int:
    """Training items in a batch: the source images of a UDA batch, else the first tensor's length."""
    if isinstance(batch, dict):
        node = batch.get("source", batch)
        x = node.get("img") if isinstance(node, dict) else None
        if isinstance(x, torch.Tensor):
            return int(x.shape[0])
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0])
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 1

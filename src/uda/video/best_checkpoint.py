"""Last and best checkpoint: the video papers report the best validation snapshot of a run.

Source: video_uda.md §1.6 (``TEST.MODE: video_best`` evaluates every saved snapshot on Cityscapes-Seq val and
reports the best one; "plan to report both last-checkpoint and best-checkpoint numbers") and udass.md §2.8,
§4.5.10 (the image branch picks its released checkpoint the same way).

:class:`BestCheckpoint` follows every validation of a training run (the periodic ones, which coincide with
the saved ``step*.ckpt`` checkpoints, and the final one) and keeps the best. The selection metric is the
protocol's headline number: the first of ``data.eval_subsets`` (VIPER ``15``, SYNTHIA-Seq ``11``, SYNTHIA
``16``, ``19``), or the mIoU over all classes when there is none. ``best_mIoU`` is that selection metric
(e.g. mIoU11 of SYNTHIA-Seq, not the 12-class mean with fence) and ``best_selected_by`` names it; the mean
over all classes of that validation is ``best_mIoU_all``. Its state is saved in checkpoints, so a resumed run
still knows the best of the steps before the resume. src/train.py writes :meth:`results` into
``results.json`` next to the last checkpoint's numbers.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


class BestCheckpoint(pl.Callback):
    """Tracks the best validation (``best_mIoU`` on the selection subset, ``best_selected_by``, ``best_step``,
    ``best_subsets``, ``best_mIoU_all``)."""

    def __init__(self) -> None:
        self.value: float | None = None
        self.step: int | None = None
        self.summary: dict | None = None
        self.metric: str | None = None

    @staticmethod
    def selection(module: pl.LightningModule, summary: dict) -> tuple[str, float | None]:
        """(metric name, value): the first eval subset of the module, else the mIoU of all classes."""
        subsets = list(getattr(module, "subsets", {}) or {})
        name = next((s for s in subsets if s != "all"), None)
        if name is not None:
            return f"mIoU{name}", summary["subsets"].get(name)
        return "mIoU", summary["mIoU"]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        summary = getattr(pl_module, "last_summary", None)
        if trainer.sanity_checking or summary is None:
            return
        self.metric, value = self.selection(pl_module, summary)
        if value is not None and (self.value is None or value > self.value):
            self.value, self.step, self.summary = float(value), int(trainer.global_step), summary

    def results(self) -> dict[str, Any]:
        """The keys written into results.json (empty before any validation)."""
        if self.summary is None:
            return {}
        return {
            "best_mIoU": self.value,
            "best_selected_by": self.metric,
            "best_step": self.step,
            "best_subsets": self.summary["subsets"],
            "best_mIoU_all": self.summary["mIoU"],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step, "summary": self.summary, "metric": self.metric}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.value = state_dict.get("value")
        self.step = state_dict.get("step")
        self.summary = state_dict.get("summary")
        self.metric = state_dict.get("metric")

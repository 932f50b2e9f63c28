"""Progress bar of a step-based run: ``step 120/1000 ━━━━━━ 0:00:45 • 0:05:12 • 2.60 it/s loss: 1.234``.

Our runs count optimizer steps (``trainer.max_steps``) over one long epoch, so Lightning's RichProgressBar
would show an epoch that says nothing (``Epoch 0/-2``: ``max_epochs`` is -1) and the batches of that epoch.
:class:`StepProgressBar` shows instead the global step out of ``trainer.max_steps`` (a resumed run starts at
the checkpoint's step), the elapsed and the remaining time, the rate (steps a second, or seconds a step when
slower than one a second, over the last 30 s) and the progress-bar metrics (``loss``: the source
cross-entropy of the last step). Validation bars are Lightning's (``Validation 12/100``). A run without
``max_steps`` (epoch-based) keeps Lightning's epoch bar.

Without a terminal (a log file, a pipe) rich draws nothing while it runs and prints each bar once, as it was
at the end.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress.rich_progress import (
    CustomBarColumn,
    RichProgressBar,
)
from rich.progress import ProgressColumn, Task
from rich.table import Column
from rich.text import Text


class CountColumn(ProgressColumn):
    """``<description> <completed>/<total>``: ``step 120/1000``, ``Validation 3/100``."""

    def __init__(self, style: Any = "") -> None:
        self.style = style
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task: Task) -> Text:
        total = "--" if task.total is None or task.total == float("inf") else int(task.total)
        text = Text.from_markup(task.description)
        text.append(f" {int(task.completed)}/{total}", style=self.style)
        return text


def format_rate(speed: float | None) -> str:
    """``2.60 it/s``; ``1.75 s/it`` below one step a second; ``-- it/s`` before the first two steps."""
    if not speed:
        return "-- it/s"
    return f"{speed:.2f} it/s" if speed >= 1.0 else f"{1.0 / speed:.2f} s/it"


class TimeRateColumn(ProgressColumn):
    """``<elapsed> • <remaining> • <rate>``, e.g. ``0:00:45 • 0:05:12 • 2.60 it/s``."""

    max_refresh = 0.5  # the rate jitters otherwise

    def __init__(self, style: Any = "dim") -> None:
        self.style = style
        super().__init__(table_column=Column(no_wrap=True))

    @staticmethod
    def _clock(seconds: float | None) -> str:
        if seconds is None:
            return "-:--:--"
        s = int(seconds)
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        remaining = None if task.total in (None, float("inf")) else task.time_remaining
        return Text(f"{self._clock(elapsed)} • {self._clock(remaining)} • {format_rate(task.speed)}",
                    style=self.style)  # fmt: skip


class StepProgressBar(RichProgressBar):
    """RichProgressBar counting global steps out of ``trainer.max_steps`` (see the module docstring)."""

    @staticmethod
    def step_based(trainer: pl.Trainer) -> bool:
        return trainer.max_steps is not None and int(trainer.max_steps) > 0

    def configure_columns(self, trainer: pl.Trainer) -> list:
        return [
            CountColumn(style=self.theme.batch_progress),
            CustomBarColumn(
                bar_width=None,  # what the text leaves of the line: one line also at 80 columns (a log file)
                complete_style=self.theme.progress_bar,
                finished_style=self.theme.progress_bar_finished,
                pulse_style=self.theme.progress_bar_pulse,
            ),
            TimeRateColumn(style=self.theme.time),
        ]  # Lightning appends the metrics column

    def _get_train_description(self, current_epoch: int) -> str:
        if self.step_based(self.trainer):
            return "step"
        return super()._get_train_description(current_epoch)

    def _initialize_train_progress_bar_id(self) -> None:
        trainer = self.trainer
        if not self.step_based(trainer):
            super()._initialize_train_progress_bar_id()
            return
        assert self.progress is not None
        description = self._get_train_description(trainer.current_epoch)
        if self.theme.description:
            description = f"[{self.theme.description}]{description}"
        # Created at the run's current step (a resumed run), so that the rate counts only new steps.
        self.train_progress_bar_id = self.progress.add_task(
            description, total=int(trainer.max_steps), completed=int(trainer.global_step)
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.step_based(trainer):
            super().on_train_epoch_start(trainer, pl_module)
            return
        # One bar for the whole run: a new epoch of the data stream does not reset it.
        if self.is_enabled and self.progress is not None and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self.refresh()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        if not self.step_based(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if self.is_enabled and self.progress is not None and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, int(trainer.global_step))
        self._update_metrics(trainer, pl_module)
        self.refresh()

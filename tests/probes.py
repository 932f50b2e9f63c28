"""Test-only Lightning callbacks, referenced from configs as `+callbacks.<name>._target_=tests.probes.<Class>`
(they also run in the DDP child processes, which re-import them from the repository root)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch


class RankProbe(pl.Callback):
    """Per rank: counts the gradient all-reduce calls of each step (a counting DDP comm hook) and writes
    the final student / teacher tensors to `dirpath/rank<r>.pt`."""

    def __init__(self, *, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.calls: list[int] = []
        self.nbytes: list[int] = []
        self.first_source_sum: float | None = None
        self.val_state: dict[str, torch.Tensor] = {}
        self.val_pixels: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        ddp = trainer.strategy.model
        if not isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            return
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting_hook(state, bucket):
            self.calls[-1] += 1
            self.nbytes[-1] += bucket.buffer().numel() * bucket.buffer().element_size()
            return allreduce_hook(state, bucket)

        ddp.register_comm_hook(state=None, hook=counting_hook)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.calls.append(0)
        self.nbytes.append(0)
        if self.first_source_sum is None:  # each rank draws its own crops (data seeded per rank)
            self.first_source_sum = float(batch["source"]["img"].double().sum())

    def on_validation_epoch_start(self, trainer, pl_module) -> None:  # after the module's buffer sync
        self.val_state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()
                          if torch.is_tensor(v)}  # fmt: skip

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # before the module computes / resets
        self.val_pixels = int(pl_module.val_confmat.compute().sum())  # reduced over ranks

    def on_train_end(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items() if torch.is_tensor(v)}
        params = {n for n, _ in pl_module.named_parameters()}
        torch.save(
            {"rank": trainer.global_rank, "world_size": trainer.world_size, "state": state, "params": params,
             "val_state": self.val_state, "val_pixels": self.val_pixels,
             "allreduce_calls": self.calls, "allreduce_bytes": self.nbytes, "step": trainer.global_step,
             "first_source_sum": self.first_source_sum},
            self.dirpath / f"rank{trainer.global_rank}.pt",
        )  # fmt: skip


class SigtermAt(pl.Callback):
    """Sends SIGTERM to its own process at the start of training step `step` (a simulated pre-emption:
    the signal arrives while that step runs)."""

    def __init__(self, *, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class WeightTrace(pl.Callback):
    """Copies of the student / teacher parameters after every step, and the module (in-process tests)."""

    last: WeightTrace | None = None

    def __init__(self) -> None:
        self.student: list[dict[str, torch.Tensor]] = []
        self.teacher: list[dict[str, torch.Tensor]] = []
        self.module = None
        self.exception: BaseException | None = None
        WeightTrace.last = self

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.module = pl_module
        # parameters only: BatchNorm running statistics move with every training forward
        self.student.append({k: v.detach().clone() for k, v in pl_module.student.named_parameters()})
        if pl_module.teacher is not None:
            named = pl_module.teacher.model.named_parameters()
            self.teacher.append({k: v.detach().clone() for k, v in named})

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.module, self.exception = pl_module, exception

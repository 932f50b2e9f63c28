"""A killed run leaves a usable checkpoint: SIGTERM (SLURM pre-emption or time limit, `kill`, `scancel`)
writes `checkpoints/last.ckpt` and stops; `python -m src.train ... ckpt_path=last` resumes from it
(src/train.py resolves `last` to the run's newest checkpoint), bit for bit as if never interrupted.

Lightning's own SIGTERM handling only notes the signal (`trainer.received_sigterm`): under DDP it raises
`SIGTERMException` on every rank at the start of the next step (rank 0's flag is broadcast), but in a
single process it trains on to the end of the epoch, which for our one-epoch stream is the end of the
run. This callback makes both cases end the same way: the single process raises `SIGTERMException` after
the step in flight, and on that exception every rank writes the checkpoint together (the write is a
collective: QuadMix gathers every rank's memory). The checkpoint is taken between two steps, the same
point as the periodic `ModelCheckpoint` files, so the resume is exact.

SLURM's `--signal=USR1@90` + Lightning's `SLURMEnvironment(auto_requeue=True)` (the default on SLURM) is
the other route: Lightning writes `hpc_ckpt_<n>.ckpt` into the run directory and requeues the job;
`ckpt_path=last` considers those files too.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info


class PreemptionCheckpoint(pl.Callback):
    """SIGTERM -> `dirpath/filename` (default `checkpoints/last.ckpt`), then the run stops (issue 8)."""

    def __init__(self, *, dirpath: str | Path, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.saved_at_step: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Under DDP Lightning raises on all ranks at the next step; a single process must stop itself.
        if trainer.received_sigterm and trainer.world_size == 1:
            raise SIGTERMException()

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole training state: resumable
        self.saved_at_step = trainer.global_step
        rank_zero_info(
            f"SIGTERM: checkpoint of step {trainer.global_step} written to {self.path}; resume with "
            f"ckpt_path=last (same run directory: hydra.run.dir={self.path.parent.parent})"
        )

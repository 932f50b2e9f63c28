"""`python -m src.train experiment=<name> [group=option ...] [key=value ...]`

Seeds everything, builds the data module and the UDA module from the composed config, trains,
evaluates the student, prints the per-class table and writes `results.json` into the run directory.
Returns the target mIoU (the value Hydra sweepers optimise).

Starting from a whole trained segmentor (student, EMA teacher, ImageNet FD encoder; not the optimizer):
`model.init_from=<checkpoint or released .pth>` (src/uda/init_from.py).

Resuming: `ckpt_path=<file>`, or `ckpt_path=last` for the newest checkpoint of the run directory
(`checkpoints/*.ckpt`, and Lightning's SLURM `hpc_ckpt_*.ckpt`), with `hydra.run.dir=<that run's
directory>`; `ckpt_path=auto` does the same but starts afresh when there is none (a requeued job).
A SIGTERM (pre-emption) writes `checkpoints/last.ckpt` first (src/callbacks/preemption.py).

DDP (`trainer=ddp`): Lightning starts ranks 1.. by re-running the command line with the run directory
pinned. In a multirun that command line is the whole sweep, so for the duration of `fit` the command
line is replaced by this job's own overrides (single-run mode) and the run directory by the job's:
every rank of a job shares the job's directory, one directory per job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from pytorch_lightning.utilities.exceptions import SIGTERMException

import src.utils.config  # noqa: F401  (registers the udass.* resolvers)
from src.metrics.miou import format_table
from src.uda.init_from import init_from
from src.uda.video.best_checkpoint import BestCheckpoint
from src.uda.video.module import build_module, module_class
from src.utils import quiet
from src.utils.benchmark_table import reference_lines
from src.utils.cli import check_resume_checkpoint, readable_errors
from src.utils.config import PROJECT_ROOT
from src.utils.settings import check_settings, warn_settings

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The data module of ``cfg.data``; video data reads only the target flows the method reads
    (``target_flows_read`` of the method's module class: e.g. no t -> t−Δ−1 for TPS or the ViT MMD)."""
    rcs = OmegaConf.to_container(cfg.uda.get("rcs") or {}, resolve=True)
    extra = {}
    if cfg.data.get("video"):
        plain = {"uda": OmegaConf.to_container(cfg.uda, resolve=True)}  # what the method reads: uda.*
        flows = module_class(plain).target_flows_read(plain)
        if flows is not None:
            extra["target_flows"] = list(flows)
    return instantiate(cfg.data, rcs=rcs, seed=cfg.seed, _recursive_=True, **extra)


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and c.get("_target_")]


def _hydra_config():
    """The running Hydra job's `hydra` node, or None outside a Hydra run (tests, scripts)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _is_multirun(hc) -> bool:
    from hydra.types import RunMode

    return hc is not None and hc.mode == RunMode.MULTIRUN


def wandb_group(cfg: DictConfig) -> str | None:
    """`logger.wandb.group: auto`: in a multirun the sweep directory's name (`<task>/<sweep dir name>`), so
    the jobs of one sweep (seeds, ablations; one W&B run each) form one W&B group; none in a single run."""
    hc = _hydra_config()
    if _is_multirun(hc):
        return f"{cfg.get('task_name', 'train')}/{Path(hc.sweep.dir).name}"
    return None


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for c in (cfg.get("logger") or {}).values():
        if not c or not c.get("_target_"):
            continue
        if c.get("group") == "auto":
            c = OmegaConf.merge(c, {"group": wandb_group(cfg)})
        loggers.append(instantiate(c))
    return loggers


def resolve_ckpt_path(ckpt_path: str | None, out_dir: Path) -> str | None:
    """`last` -> the newest checkpoint of the run directory (clear error if none); `auto` -> the same or
    None (fresh start); anything else is returned as given."""
    if ckpt_path in (None, "", "null"):
        return None
    if str(ckpt_path) not in ("last", "auto"):
        return str(ckpt_path)
    found = [*Path(out_dir, "checkpoints").glob("*.ckpt"), *Path(out_dir).glob("hpc_ckpt_*.ckpt")]
    if found:  # newest write wins; on a tie prefer last.ckpt (written at the end or on SIGTERM)
        return str(max(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt")))
    if ckpt_path == "auto":
        log.info("ckpt_path=auto: no checkpoint in %s, starting a fresh run", out_dir)
        return None
    raise FileNotFoundError(
        f"ckpt_path=last: no checkpoint in {Path(out_dir, 'checkpoints')} (nor an hpc_ckpt_*.ckpt in "
        f"{out_dir}). To resume a run, point at its directory: ckpt_path=last hydra.run.dir=<run dir>; "
        f"ckpt_path=auto starts afresh when there is nothing to resume"
    )


_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


class MultirunDDPJob:
    """Multirun + DDP started by Lightning (not SLURM / torchrun): one job's ranks, not the sweep's.

    `launching()` (around `fit`, where Lightning starts ranks 1..) swaps the command line for this job's
    overrides in single-run mode and the run directory for the job's; `close()` (end of the job) tears the
    job's process group down and restores the launcher's environment variables, so that the next job of
    the sweep starts its own ranks again (Lightning would otherwise take the leftover LOCAL_RANK for an
    external launcher and reuse the dead group).
    """

    def __init__(self) -> None:
        self.hc = _hydra_config()
        self.active = _is_multirun(self.hc) and "LOCAL_RANK" not in os.environ
        self.env = {k: os.environ.get(k) for k in _LAUNCHER_ENV}

    @contextlib.contextmanager
    def launching(self) -> Iterator[None]:
        if not self.active:
            yield
            return
        hc, argv = self.hc, list(sys.argv)
        options = [a for a in argv[1:] if a.startswith("-") and a not in ("-m", "--multirun")]
        sys.argv = [argv[0], *options, *hc.overrides.task]
        with read_write(hc), open_dict(hc):
            run_dir = hc.run.dir
            hc.run.dir = hc.runtime.output_dir
        try:
            yield
        finally:
            sys.argv = argv
            with read_write(hc), open_dict(hc):
                hc.run.dir = run_dir

    def close(self) -> None:
        if not self.active:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for k, v in self.env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_results(path: Path, summary: dict, cfg: DictConfig, steps: int, extra: dict | None = None) -> dict:
    """results.json, stable schema: mIoU, per_class, subsets, method, data, model, seed, steps."""
    results = {
        "mIoU": summary["mIoU"],
        "per_class": summary["per_class"],
        "subsets": summary["subsets"],
        "method": cfg.uda.get("name") if cfg.get("uda") else None,
        "data": cfg.data.get("name"),
        "model": cfg.model.get("name") if cfg.get("model") else None,
        "seed": cfg.get("seed"),
        "steps": steps,
    }
    results.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def train(cfg: DictConfig) -> dict[str, Any]:
    check_settings(cfg)  # trainer.max_steps=abc, data.crop_size=[-5,64]: one line naming the key
    warn_settings(cfg)  # e.g. an HRDA model on *_hr data evaluated on whole images
    pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    datamodule = build_datamodule(cfg)
    module = build_module(OmegaConf.to_container(cfg, resolve=True))  # uda.module: UDAModule or a subclass
    if cfg.model.get(
        "init_from"
    ):  # a whole trained segmentor (also on resume: it sets the teacher's EMA mode)
        init_from(module, cfg.model.init_from)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), out_dir)  # `last` / `auto` -> a file (or None)
    if ckpt_path:  # one readable message for a missing / foreign checkpoint (issue 9)
        check_resume_checkpoint(ckpt_path, module)
    loggers = build_loggers(cfg)
    job = MultirunDDPJob()
    best = BestCheckpoint()  # results.json: best validation next to the last (video_uda.md §1.6)
    callbacks = [*build_callbacks(cfg), best]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      default_root_dir=str(out_dir))  # fmt: skip
    try:
        if loggers:
            for lg in loggers:
                lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        try:
            with job.launching():
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:
            log.warning("stopped by SIGTERM at step %d; resume with ckpt_path=last hydra.run.dir=%s",
                        trainer.global_step, out_dir)  # fmt: skip
            raise
        # The whole training state (optimizer, loops, callbacks: resumable). Lightning's default (None) means
        # the same but logs "`weights_only` was not set, defaulting to `False`" on every run.
        trainer.save_checkpoint(out_dir / "checkpoints" / "last.ckpt", weights_only=False)
        # Final evaluation of the student (skipped when the last step was just evaluated).
        if module.last_summary is None or trainer.global_step % int(cfg.trainer.val_check_interval) != 0:
            trainer.validate(module, datamodule=datamodule, verbose=False)
        summary = module.last_summary
        extra = {}
        if module.last_teacher_summary is not None:
            extra["teacher_mIoU"] = module.last_teacher_summary["mIoU"]
        extra.update(best.results())
        results = {}
        if trainer.is_global_zero:
            print(
                format_table(summary, title=f"{cfg.uda.name} on {cfg.data.name}: student, per-class IoU (%)")
            )
            results = write_results(out_dir / "results.json", summary, cfg, trainer.global_step, extra)
            log.info("results written to %s", out_dir / "results.json")
            # What adaptation bought: the same setting's rows of the README tables (results/*.csv)
            ref = {"method": str(cfg.uda.name), "data": str(cfg.data.name), "model": str(cfg.model.name)}
            for line in reference_lines(PROJECT_ROOT / "results", **ref, steps=trainer.global_step,
                                        miou=float(summary["mIoU"] or 0.0)):  # fmt: skip
                print(line)
        return results
    finally:
        job.close()
        for lg in loggers:
            if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
                import wandb

                wandb.finish()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@readable_errors  # user errors -> one line on stderr (src/utils/cli.py)
def main(cfg: DictConfig) -> float | None:
    quiet.install()  # known third-party noise, one message at a time (src/utils/quiet.py)
    results = train(cfg)
    return results.get("mIoU")


if __name__ == "__main__":
    main()

"""`python -m src.train experiment=<name> [group=option ...] [key=value ...]`

Seeds everything, builds the data module and the UDA module from the composed config, trains,
evaluates the student, prints the per-class table and writes `results.json` into the run directory.
Returns the target mIoU (the value Hydra sweepers optimise).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import src.utils.config  # noqa: F401  (registers the udass.* resolvers)
from src.metrics.miou import format_table
from src.uda.module import UDAModule

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    rcs = OmegaConf.to_container(cfg.uda.get("rcs") or {}, resolve=True)
    return instantiate(cfg.data, rcs=rcs, seed=cfg.seed, _recursive_=True)


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and c.get("_target_")]


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and c.get("_target_")]


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
    pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    datamodule = build_datamodule(cfg)
    module = UDAModule(OmegaConf.to_container(cfg, resolve=True))
    loggers = build_loggers(cfg)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=loggers or False,
                                      default_root_dir=str(out_dir))  # fmt: skip
    try:
        if loggers:
            for lg in loggers:
                lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        trainer.save_checkpoint(out_dir / "checkpoints" / "last.ckpt")
        # Final evaluation of the student (skipped when the last step was just evaluated).
        if module.last_summary is None or trainer.global_step % int(cfg.trainer.val_check_interval) != 0:
            trainer.validate(module, datamodule=datamodule, verbose=False)
        summary = module.last_summary
        extra = {}
        if module.last_teacher_summary is not None:
            extra["teacher_mIoU"] = module.last_teacher_summary["mIoU"]
        results = {}
        if trainer.is_global_zero:
            print(
                format_table(summary, title=f"{cfg.uda.name} on {cfg.data.name}: student, per-class IoU (%)")
            )
            results = write_results(out_dir / "results.json", summary, cfg, trainer.global_step, extra)
            log.info("results written to %s", out_dir / "results.json")
        return results
    finally:
        for lg in loggers:
            if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
                import wandb

                wandb.finish()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    results = train(cfg)
    return results.get("mIoU")


if __name__ == "__main__":
    main()

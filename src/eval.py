"""`python -m src.eval ckpt_path=PATH [data=... data.val_dir=...] [eval.mode=slide ...]`

Evaluates the student of a checkpoint on a validation set, prints the per-class table and writes
`results.json` (same schema as training) into the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import src.utils.config  # noqa: F401
from src.metrics.miou import format_table, resolve_subsets
from src.train import write_results
from src.uda.video.module import load_module  # the module class of the checkpoint's uda.module
from src.utils import quiet
from src.utils.cli import readable_errors
from src.utils.settings import check_settings

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    check_settings(cfg)  # eval.crop_size / eval.stride, data.* of another validation set
    module = load_module(cfg.ckpt_path)
    ckpt_cfg = OmegaConf.create(module.cfg)
    if cfg.get("data"):  # another validation set than the checkpoint's
        ckpt_cfg.data = cfg.data
        module.class_names = list(cfg.data.class_names)
        module.subsets = resolve_subsets(cfg.data.eval_subsets, module.num_classes)
        if int(cfg.data.num_classes) != module.num_classes:
            raise ValueError(
                f"data.num_classes={cfg.data.num_classes} but the checkpoint predicts "
                f"{module.num_classes} classes"
            )
    if cfg.get("eval"):  # only the keys given (null = keep the checkpoint's setting)
        given = OmegaConf.to_container(cfg.eval, resolve=True)
        module.eval_cfg.update({k: v for k, v in given.items() if v is not None})
    datamodule = instantiate(ckpt_cfg.data, rcs=None, seed=0)
    trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer), logger=False, enable_model_summary=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    summary = module.last_summary
    print(format_table(summary, title=f"{Path(cfg.ckpt_path).name}: student, per-class IoU (%)"))
    steps = int(module.cfg["trainer"]["max_steps"])
    extra = {"ckpt_path": str(cfg.ckpt_path)}
    if module.last_teacher_summary is not None:
        extra["teacher_mIoU"] = module.last_teacher_summary["mIoU"]
    return write_results(Path(cfg.paths.output_dir) / "results.json", summary, ckpt_cfg, steps, extra)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@readable_errors  # missing / foreign checkpoint -> one line on stderr (src/utils/cli.py)
def main(cfg: DictConfig) -> float | None:
    quiet.install()  # known third-party noise, one message at a time (src/utils/quiet.py)
    return evaluate(cfg).get("mIoU")


if __name__ == "__main__":
    main()

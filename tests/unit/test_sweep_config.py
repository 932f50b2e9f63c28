"""Sweeps (issue 8): each multirun job is its own W&B run in a group named after the sweep; the SLURM
launcher config composes (when the optional `[cluster]` extra is installed)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

from src.train import build_loggers, wandb_group
from tests.conftest import CONF


def _compose(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["logger=wandb", f"paths.output_dir={tmp_path}",
                                           f"hydra.sweep.dir={tmp_path}/multiruns/2026-01-01_10-00-00",
                                           *overrides], return_hydra_config=True)  # fmt: skip


@pytest.mark.parametrize(
    "mode, group", [(RunMode.MULTIRUN, "train/2026-01-01_10-00-00"), (RunMode.RUN, None)]
)
def test_wandb_group_is_the_sweep(tmp_path, monkeypatch, mode, group):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = _compose(tmp_path, "seed=3")
    with open_dict(cfg):
        cfg.hydra.mode = mode
    HydraConfig.instance().set_config(cfg)
    try:
        assert wandb_group(cfg) == group
        (logger,) = build_loggers(cfg)
        assert type(logger).__name__ == "WandbLogger"
        assert (
            logger._wandb_init["group"] == group and logger._wandb_init["name"] == "source_only_synthetic_s3"
        )
    finally:
        HydraConfig.instance().cfg = None
    assert wandb_group(cfg) is None  # outside a Hydra run (tests, scripts): no group


def test_slurm_launcher_config(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra [cluster]")
    cfg = _compose(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                   "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4")  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 4, 4)
    assert launcher.submitit_folder.endswith("/.submitit/%j")

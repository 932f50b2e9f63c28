"""Every experiment composes and builds its module; CLI overrides win over experiments; --cfg job works;
bad input (unknown experiment, misspelt key) ends in one readable message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.uda.module import UDAModule
from tests.conftest import CONF, ROOT, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.endswith("_base"))
UDA_METHODS = sorted(p.stem for p in (CONF / "uda").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    cfg = compose_cfg("train", [f"experiment={experiment}", "paths.output_dir=/tmp/x"])
    OmegaConf.resolve(cfg)
    assert cfg.uda.name and cfg.model.name and cfg.data.name
    assert cfg.trainer.max_steps > 0


@pytest.mark.parametrize("uda", UDA_METHODS)
def test_every_method_builds_its_module(uda):
    """Each uda=<method> on a tiny model: all strategy objects instantiate from config."""
    cfg = compose_cfg("train", [f"uda={uda}", "paths.output_dir=/tmp/x", "model.head_channels=16"])
    module = UDAModule(OmegaConf.to_container(cfg, resolve=True))
    assert (module.teacher is None) == (uda == "source_only")
    params = {id(p) for p in module.student.parameters()}
    opt = module.configure_optimizers()[0][0]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == params  # only the student is optimised (teacher and ImageNet encoder are frozen)


def test_cli_overrides_win_over_the_experiment():
    cfg = compose_cfg("train", ["experiment=mic_synthetic", "model=deeplabv2_r101", "logger=csv", "seed=1",
                                "uda.mask.masker.ratio=0.5"])  # fmt: skip
    assert cfg.model.name == "deeplabv2_r101" and cfg.seed == 1
    assert cfg.uda.name == "mic" and cfg.uda.mask.masker.ratio == 0.5


def test_strategies_switch_on_the_command_line():
    cfg = compose_cfg("train", ["uda=daformer", "uda/mask=mic", "uda.rcs.enabled=false", "uda/fd=none"])
    assert cfg.uda.mask.masker.block_size == 32 and not cfg.uda.rcs.enabled and not cfg.uda.fd


def _run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "src.train", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cfg_job_prints_the_composed_config():
    r = _run("experiment=source_only_synthetic", "model=deeplabv2_r101", "seed=1", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    cfg = OmegaConf.create(r.stdout)
    assert cfg.model.name == "deeplabv2_r101" and cfg.seed == 1 and cfg.uda.name == "source_only"


def test_unknown_experiment_and_misspelt_key_are_readable():
    r = _run("experiment=no_such_experiment", "--cfg", "job")
    assert r.returncode != 0 and "no_such_experiment" in r.stderr and "Traceback" not in r.stderr
    r = _run("trainer.max_stepz=3", "--cfg", "job")
    assert r.returncode != 0 and "max_stepz" in r.stderr and "Traceback" not in r.stderr


def test_default_experiment_is_source_only_synthetic():
    cfg = compose_cfg("train", [])
    assert cfg.uda.name == "source_only" and cfg.data.name == "synthetic"
    assert cfg.model.name == "daformer_mitb0"
    assert Path(CONF / "experiment" / "source_only_synthetic.yaml").is_file()

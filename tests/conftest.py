"""Shared fixtures: a tiny synthetic dataset (generated once per session) and config composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import src.utils.config  # noqa: F401  (resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

os.environ.setdefault("WANDB_MODE", "offline")
# Two threads on the 2-core CI machine; OMP_NUM_THREADS=1 (a machine busy with other jobs) is respected.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))

TINY_SYNTHETIC = [
    "data.prepare.num_source=12",
    "data.prepare.num_target=12",
    "data.prepare.num_val=4",
    "data.prepare.height=64",
    "data.prepare.width=128",
    "data.crop_size=[64,64]",
    "data.num_workers=0",
]
#: the tiny synthetic clips of `video_data_dir` (data.prepare.* must match it, or the clips are regenerated)
TINY_VIDEO = [
    "data.prepare.num_source=6",
    "data.prepare.num_target=6",
    "data.prepare.num_val=2",
    "data.prepare.height=64",
    "data.prepare.width=128",
    "data.crop_size=[32,32]",
    "data.num_workers=0",
]
FAST_TRAINER = [
    "model.head_channels=16",
    # The synthetic experiments start from the offline ImageNet stand-in (model.pretrained=synthetic, minutes
    # of pre-training); the mechanics the tests check do not need it (tests/unit/test_synthetic_weights.py).
    "model.pretrained=null",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "callbacks.progress=null",
    "logger=csv",
]


@pytest.fixture(scope="session", autouse=True)
def _no_full_stand_in_pretraining():
    """The full pre-training of the ImageNet stand-in (minutes) never runs in the test suite (issue 15): a
    test that builds a `*_synthetic` model without `model.pretrained=null` fails here instead of writing the
    stand-in into the repository's data/ behind the suite's back. The tiny pre-training of
    tests/unit/test_synthetic_weights.py (a few steps) passes."""
    import src.models.synthetic_weights.pretrain as P

    real = P.pretrain

    def guarded(backbone="mit_b0", *args, steps: int = P.DEFAULTS["steps"], **kwargs):
        if steps > 20:
            raise AssertionError(
                f"a test started the full pre-training of the synthetic stand-in ({steps} steps): add "
                "'model.pretrained=null' to its overrides (tests/conftest.py FAST_TRAINER)"
            )
        return real(backbone, *args, steps=steps, **kwargs)

    P.pretrain = guarded
    yield
    P.pretrain = real


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """DATA_ROOT of the tests, holding the tiny synthetic dataset (generated on first use)."""
    d = tmp_path_factory.mktemp("data")
    from src.data.prepare import prepare_synthetic

    prepare_synthetic(d / "synthetic", num_source=12, num_target=12, num_val=4, height=64, width=128, seed=0)
    return d


@pytest.fixture(scope="session")
def video_data_dir(tmp_path_factory) -> Path:
    """DATA_ROOT holding tiny synthetic clips, 64x128 (target clips hold t-3..t: data.interval 1 or 2)."""
    d = tmp_path_factory.mktemp("video_data")
    from src.data.prepare import prepare_synthetic_video

    prepare_synthetic_video(d / "synthetic_video", num_source=6, num_target=6, num_val=2, height=64,
                            width=128, max_interval=2, seed=0)  # fmt: skip
    return d


def compose_cfg(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))


@pytest.fixture
def train_cfg(data_dir, tmp_path):
    """Compose a fast training config: `train_cfg("experiment=mic_synthetic", ...)`."""

    def make(*overrides: str) -> DictConfig:
        base = [f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path / 'run'}"]
        return compose_cfg("train", base + TINY_SYNTHETIC + FAST_TRAINER + list(overrides))

    return make

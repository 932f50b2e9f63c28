"""Phase boundaries in steps or as fractions of trainer.max_steps (src/utils/phases.py, issue 15 §6)."""

from __future__ import annotations

import logging

import pytest

from src.utils.phases import phase_step, resolve_phases


def _cfg(**uda):
    pseudo = {"_target_": "src.uda.cdm.ClassDecoupledPseudoLabeler", "warmup_steps": 0.0375}
    return {
        "trainer": {"max_steps": 400},
        "optim": {"warmup_steps": 0.0375},
        "uda": {"pseudo": pseudo, **uda},
    }


def test_fractions_become_steps_and_ints_stay():
    cfg = _cfg(mix={"quadmix_start": 0.15}, tps_start=250, teacher={"switch_step": 1.0})
    out = resolve_phases(cfg)
    assert out["optim"]["warmup_steps"] == 15 and out["uda"]["pseudo"]["warmup_steps"] == 15
    assert out["uda"]["mix"]["quadmix_start"] == 60 and out["uda"]["tps_start"] == 250
    assert out["uda"]["teacher"]["switch_step"] == 400
    assert cfg["uda"]["mix"]["quadmix_start"] == 0.15  # the input is not modified


def test_a_phase_after_the_run_warns_once_naming_it(caplog):
    with caplog.at_level(logging.WARNING, logger="src.utils.phases"):
        resolve_phases(_cfg(mix={"quadmix_start": 6000}))
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "uda.mix.quadmix_start = 6000" in msgs[0] and "QuadMix" in msgs[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="src.utils.phases"):
        resolve_phases(_cfg(mix={"quadmix_start": 0.15}))
    assert not caplog.records


@pytest.mark.parametrize("bad", [1.5, -0.1, -3, "abc", True])
def test_bad_values_name_the_key(bad):
    with pytest.raises(ValueError, match="uda.mix.quadmix_start"):
        phase_step(bad, 400, "uda.mix.quadmix_start")


def test_udass_run_of_400_steps_reaches_quadmix_with_a_fraction(train_cfg):
    """The issue's example: a short uda=udass run is MIC unless QuadMix's start scales with the run."""
    from omegaconf import OmegaConf

    from src.uda.video.module import build_module

    cfg = train_cfg("experiment=udass_synthetic", "model.pretrained=null", "trainer.max_steps=400",
                    "uda.mix.quadmix_start=0.15")  # fmt: skip
    module = build_module(OmegaConf.to_container(cfg, resolve=True))
    assert module.mix.quadmix_start == 60 and module.cfg["uda"]["mix"]["quadmix_start"] == 60

"""Bad settings end in one line that names what to change (issue 16, part 3): a non-finite loss (advice
that fits the run), a numeric key of the wrong type or range, a pickled `model.pretrained` file; a valid
setting that is silently not the reference protocol (an HRDA model evaluated on whole images) warns once.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from src.train import train
from src.uda.module import NonFiniteLossError, UDAModule
from src.utils.cli import one_line, readable_errors
from src.utils.settings import check_settings, warn_settings
from tests.conftest import FAST_TRAINER, ROOT, TINY_SYNTHETIC, compose_cfg


def _module(*overrides: str) -> UDAModule:
    cfg = compose_cfg("train", ["paths.output_dir=/tmp/x", "model.head_channels=16", *overrides])
    return UDAModule(OmegaConf.to_container(cfg, resolve=True))


# ------------------------------------------------------------------------------------- non-finite loss
def test_nan_stop_is_one_line_with_advice_that_fits_the_run(data_dir, tmp_path):
    """optim.lr=1e10 (the issue's input): one `error:` line with the step and the term; no checkpoint yet,
    so no ckpt_path=last; already 32-bit, so no trainer.precision=32-true; always optim.lr and skip."""
    r = subprocess.run(
        [sys.executable, "-m", "src.train", f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}",
         *TINY_SYNTHETIC, *FAST_TRAINER, "optim.lr=1e10"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    msg = errors[0]
    assert msg.startswith("error: non-finite ") and " at step " in msg, msg
    assert "optim.lr (now 1e+10)" in msg and "train.on_nonfinite=skip" in msg, msg
    assert "ckpt_path=last" not in msg and "trainer.precision" not in msg, msg
    assert "weights stay finite" in msg


def test_nan_advice_offers_resume_and_precision_only_when_they_apply(tmp_path):
    module = _module("uda=source_only", "optim.lr=0.5")
    logs = {"train/loss_src": torch.tensor(float("nan"))}
    module._trainer = SimpleNamespace(precision="32-true", default_root_dir=str(tmp_path), world_size=1)
    with pytest.raises(NonFiniteLossError) as e:
        module.check_finite(logs, 12)
    msg = str(e.value)
    assert msg.startswith("non-finite loss at step 12: train/loss_src = nan. ") and "\n" not in msg
    assert "optim.lr (now 0.5)" in msg and "train.on_nonfinite=skip" in msg
    assert "ckpt_path=last" not in msg and "trainer.precision" not in msg
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step000010.ckpt").write_bytes(b"x")
    module._trainer = SimpleNamespace(precision="bf16-mixed", default_root_dir=str(tmp_path), world_size=1)
    advice = module.nonfinite_advice()
    assert "trainer.precision=32-true (now bf16-mixed)" in advice
    assert f"ckpt_path=last hydra.run.dir={tmp_path}" in advice
    assert isinstance(e.value, RuntimeError)  # still a RuntimeError for callers that catch one


# ------------------------------------------------------------------------------------- model.pretrained
class Pickled:
    """Any Python object: torch.save pickles it, a weights-only load refuses it."""


@pytest.mark.parametrize("kind", ["object", "plain_pickle"])
def test_a_pickled_pretrained_file_is_named_without_the_weights_only_hint(
    kind, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    path = tmp_path / "mit_b0.pth"
    if kind == "object":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": Pickled()}, path)
    else:
        import pickle

        path.write_bytes(pickle.dumps({"state_dict": OrderedDict(w=1)}, protocol=4))
    with pytest.raises(SystemExit):
        readable_errors(_module)(f"model.pretrained={path}")
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: model.pretrained={path} is not a plain tensor checkpoint"), err
    assert "weights_only" not in err and "Error in call to target" not in err
    if kind == "object":
        assert f"({__name__}.Pickled)" in err


def test_one_line_names_the_key_of_a_nested_instantiation_error():
    from hydra.utils import instantiate

    cfg = OmegaConf.create({"uda": {"mix": {"_target_": "src.uda.mixing.quadmix.QuadMix",
                                            "target_class_pool": "some"}}})  # fmt: skip
    with pytest.raises(Exception) as e:
        instantiate(cfg)
    assert one_line(e.value).startswith("uda.mix: target_class_pool must be one of")


# ------------------------------------------------------------------------------------- numeric settings
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=abc", "trainer.max_steps=abc: expected an integer >= 1 (the number of training"),
        ("trainer.max_steps=0", "trainer.max_steps=0: expected an integer >= 1"),
        ("trainer.val_check_interval=0.5", "trainer.val_check_interval=0.5: expected an integer >= 1"),
        ("data.crop_size=[-5,64]", "data.crop_size=[-5,64]: expected [height, width], two integers >= 1"),
        ("data.crop_size=64", "data.crop_size=64: expected [height, width]"),
        ("data.batch_size=true", "data.batch_size=true: expected an integer >= 1"),
        ("optim.lr=-1e-4", "optim.lr=-0.0001: expected a finite number > 0"),
        ("optim.lr=fast", "optim.lr=fast: expected a finite number > 0"),
        ("eval.crop_size=[512]", "eval.crop_size=[512]: expected null or [height, width]"),
    ],
)  # fmt: skip
def test_a_bad_numeric_setting_names_the_key_and_the_expected_type(override, message, train_cfg):
    with pytest.raises(ValueError) as e:
        check_settings(train_cfg(override))
    assert str(e.value).startswith(message), str(e.value)


def test_good_settings_pass_and_absent_keys_are_not_checked(train_cfg):
    check_settings(train_cfg())
    check_settings(train_cfg("experiment=mic_hrda_synthetic"))
    check_settings(
        compose_cfg("eval", ["ckpt_path=x.ckpt", "paths.output_dir=/tmp/x"])
    )  # no trainer.max_steps


def test_train_checks_the_settings_first(train_cfg, capsys, monkeypatch):
    """Through the CLI wrapper: one line, before anything is built."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as e:
        readable_errors(train)(train_cfg("data.crop_size=[-5,64]"))
    assert e.value.code == 1
    assert capsys.readouterr().err == (
        "error: data.crop_size=[-5,64]: expected [height, width], two integers >= 1 (the training crop in "
        "pixels)\n"
    )


# ------------------------------------------------------------------------------------- protocol warnings
def test_hrda_on_hr_data_evaluated_whole_warns_once(caplog):
    base = ["paths.output_dir=/tmp/x", "model=hrda_daformer_mitb5", "data=gta_to_cityscapes_hr"]
    with caplog.at_level(logging.WARNING, logger="src.utils.settings"):
        warned = warn_settings(compose_cfg("train", base))
    assert len(warned) == 1 and len(caplog.records) == 1
    assert "eval.mode=whole" in warned[0] and "eval.mode=slide eval.crop_size=[1024,1024]" in warned[0]
    # the HRDA experiments evaluate with the sliding window; other models or data do not warn
    assert warn_settings(compose_cfg("train", ["paths.output_dir=/tmp/x", "experiment=mic_hrda_gta"])) == []
    assert warn_settings(compose_cfg("train", [*base, "eval.mode=slide"])) == []
    assert warn_settings(compose_cfg("train", [*base[:2], "data=gta_to_cityscapes"])) == []
    assert warn_settings(compose_cfg("train", [base[0], "model=daformer_mitb5", base[2]])) == []

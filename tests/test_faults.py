"""Faults: a SIGTERM leaves checkpoints/last.ckpt and `ckpt_path=last` resumes it exactly; a non-finite loss
stops the run naming the step and the term, or skips the update; the teacher never takes NaN weights."""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import pytest
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

import src.uda.module as module_mod
from src.train import resolve_ckpt_path, train
from src.uda.module import NonFiniteLossError, load_module
from tests.probes import WeightTrace
from tests.test_train import _assert_same

DACS = ["experiment=dacs_synthetic", "trainer.max_steps=2", "trainer.val_check_interval=2"]
TRACE = ["+callbacks.trace._target_=tests.probes.WeightTrace"]


def _all_finite(module) -> bool:
    return all(torch.isfinite(p).all() for p in module.parameters())


# ---------------------------------------------------------------- ckpt_path=last / auto
def test_resolve_ckpt_path(tmp_path):
    assert resolve_ckpt_path(None, tmp_path) is None
    assert resolve_ckpt_path("some/file.ckpt", tmp_path) == "some/file.ckpt"
    with pytest.raises(FileNotFoundError, match="ckpt_path=last: no checkpoint in .*hydra.run.dir=<run dir>"):
        resolve_ckpt_path("last", tmp_path)
    assert resolve_ckpt_path("auto", tmp_path) is None  # nothing to resume: a fresh start
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    now = time.time()
    for i, name in enumerate(["step000100.ckpt", "last.ckpt", "step000200.ckpt"]):
        (ckpts / name).write_bytes(b"x")
        os.utime(ckpts / name, (now + i, now + i))
    assert resolve_ckpt_path("last", tmp_path) == str(ckpts / "step000200.ckpt")  # the newest write
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"x")  # Lightning's SLURM requeue checkpoint
    os.utime(tmp_path / "hpc_ckpt_1.ckpt", (now + 9, now + 9))
    assert resolve_ckpt_path("auto", tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")


# ---------------------------------------------------------------- SIGTERM
def _killed_run(train_cfg, out: Path) -> Path:
    """SIGTERM arrives during step 0: that step completes, is checkpointed, and the run stops."""
    with pytest.raises(SIGTERMException):
        train(train_cfg(*DACS, f"paths.output_dir={out}", "+callbacks.kill._target_=tests.probes.SigtermAt",
                        "+callbacks.kill.step=0"))  # fmt: skip
    return out / "checkpoints" / "last.ckpt"


def test_sigterm_leaves_a_usable_checkpoint(train_cfg, tmp_path):
    last = _killed_run(train_cfg, tmp_path / "cut")
    assert last.is_file() and not (tmp_path / "cut" / "results.json").exists()
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 1
    module = load_module(last)  # loads without Hydra
    assert module.teacher is not None and _all_finite(module)
    assert resolve_ckpt_path("last", tmp_path / "cut") == str(last)


@pytest.mark.slow
def test_sigterm_then_ckpt_last_resumes_exactly(train_cfg, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(train_cfg(*DACS, f"paths.output_dir={full}"))
    last = _killed_run(train_cfg, cut)
    # resume: the newest checkpoint of the run directory, and the result is the uninterrupted run's
    out = train(train_cfg(*DACS, f"paths.output_dir={cut}", "ckpt_path=last"))
    assert out["steps"] == 2
    a = load_module(full / "checkpoints" / "last.ckpt").state_dict()
    b = load_module(last).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        _assert_same(a[k], b[k], k)


# ---------------------------------------------------------------- non-finite losses
@pytest.fixture
def poison_mix_at_step_1(monkeypatch):
    """The ClassMix loss (the CE call with a pixel weight) of the 2nd step becomes NaN."""
    wce, calls = module_mod.weighted_cross_entropy, [0]

    def poisoned(logits, target, weight=None, **kw):
        out = wce(logits, target, weight, **kw)
        if weight is not None:
            calls[0] += 1
            if calls[0] == 2:
                return out * float("nan")
        return out

    monkeypatch.setattr(module_mod, "weighted_cross_entropy", poisoned)


def test_nonfinite_loss_stops_naming_step_and_term(train_cfg, poison_mix_at_step_1):
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 1: train/loss_mix = nan"):
        train(train_cfg(*DACS, *TRACE))
    trace = WeightTrace.last
    assert isinstance(trace.exception, NonFiniteLossError) and len(trace.student) == 1  # step 0 only
    assert _all_finite(trace.module.student) and _all_finite(trace.module.teacher)
    # stopped before the optimizer step: the student is still the one after step 0
    for k, v in trace.module.student.named_parameters():
        assert torch.equal(v, trace.student[0][k]), k


def test_nonfinite_loss_skip_leaves_weights_and_optimizer_untouched(train_cfg, poison_mix_at_step_1):
    cfg = train_cfg(*DACS, *TRACE, "train.on_nonfinite=skip")
    out = train(cfg)
    assert out["steps"] == 2  # the skipped step still counts: data, seeds and schedule stay aligned
    trace = WeightTrace.last
    s0, s1 = trace.student
    assert all(torch.equal(s0[k], s1[k]) for k in s0)  # step 1 changed nothing
    assert _all_finite(trace.module.student) and _all_finite(trace.module.teacher)
    opt = trace.module.trainer.optimizers[0]
    assert {int(st["step"]) for st in opt.state.values()} == {1}  # AdamW updated once in 2 steps
    rows = list(csv.DictReader(Path(cfg.paths.output_dir, "csv", "metrics.csv").open()))
    skipped = [float(r["train/skipped_steps"]) for r in rows if r.get("train/skipped_steps")]
    assert skipped == [0.0, 1.0]
    assert all(math.isfinite(float(r["train/loss_src"])) for r in rows if r.get("train/loss_src"))

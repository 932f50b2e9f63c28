"""`train.*` switches of the UDA module (issue 8): backward modes, the non-finite check, fused AdamW,
channels_last and torch.compile wiring. No Trainer: the module's own methods, on a tiny model."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from src.uda.module import NonFiniteLossError, UDAModule
from tests.conftest import compose_cfg


def _module(*overrides: str) -> UDAModule:
    cfg = compose_cfg("train", ["experiment=source_only_synthetic", "model.head_channels=16",
                                "model.pretrained=null", "paths.output_dir=/tmp/unused",
                                *overrides])  # fmt: skip
    return UDAModule(OmegaConf.to_container(cfg, resolve=True))


@pytest.fixture(scope="module")
def module() -> UDAModule:
    return _module()


def test_defaults_and_validation(module):
    assert (module.backward_mode, module.on_nonfinite) == ("deferred", "stop")
    assert not module.channels_last and not module.compile_mode
    with pytest.raises(ValueError, match="train.backward must be one of"):
        _module("train.backward=twice")
    with pytest.raises(ValueError, match="train.on_nonfinite must be one of"):
        _module("train.on_nonfinite=ignore")


def test_sum_mode_runs_one_backward_of_the_sum(module, monkeypatch):
    calls = []

    def manual_backward(loss):
        calls.append(float(loss.detach()))
        loss.backward()

    monkeypatch.setattr(module, "manual_backward", manual_backward)
    monkeypatch.setattr(module, "backward_mode", "sum")
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    module.backward_term((w * 3).sum(), last=False)
    assert calls == [] and w.grad is None  # nothing yet: the graph is kept
    module.backward_term((w**2).sum(), last=True)
    assert calls == [9.0 + 5.0]
    torch.testing.assert_close(w.grad, torch.tensor([3.0 + 2.0, 3.0 + 4.0]))
    # deferred without DDP: one backward per term, gradients accumulate to the same values
    monkeypatch.setattr(module, "backward_mode", "deferred")
    w.grad = None
    module.backward_term((w * 3).sum(), last=False)
    module.backward_term((w**2).sum(), last=True)
    assert calls[1:] == [9.0, 5.0]
    torch.testing.assert_close(w.grad, torch.tensor([5.0, 7.0]))


def test_check_finite_names_step_and_term(module, monkeypatch):
    for p in module.parameters():
        p.grad = None
    logs = {
        "train/loss_src": torch.tensor(0.5),
        "train/loss_mix": torch.tensor(float("nan")),
        "train/pseudo_weight": torch.tensor(float("nan")),
    }  # fmt: skip  (not a loss: not checked)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 7: train/loss_mix = nan\. "):
        module.check_finite(logs, 7)
    assert module.check_finite({"train/loss_src": torch.tensor(0.5)}, 8)
    monkeypatch.setattr(module, "on_nonfinite", "skip")
    before = module.skipped_steps
    assert not module.check_finite(logs, 9) and module.skipped_steps == before + 1
    # a finite loss with an infinite gradient is caught too; skip_update drops all gradients
    p = next(module.student.parameters())
    p.grad = torch.full_like(p, float("inf"))
    assert not module.check_finite({"train/loss_src": torch.tensor(0.5)}, 10)
    opt = torch.optim.AdamW(module.student.parameters())
    module.skip_update(opt)
    assert all(q.grad is None for q in module.parameters())


def test_fused_adamw_auto(module):
    opt = module.configure_optimizers()[0][0]
    assert opt.defaults["fused"] is True  # CPU has a fused AdamW kernel
    assert [g["name"] for g in opt.param_groups] == ["default", "no_decay", "head"]
    plain = _module("train.fused_adamw=false").configure_optimizers()[0][0]
    assert not plain.defaults["fused"]


def test_channels_last_and_compile_wiring():
    m = _module("train.channels_last=true", "train.compile=true")
    keys = list(m.state_dict())
    m.setup("fit")
    conv = m.student.backbone.patch_embed1.proj.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = m._prep(torch.randn(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert (
        m.student.backbone._compiled_call_impl is not None and m.student.head._compiled_call_impl is not None
    )
    assert list(m.state_dict()) == keys  # checkpoint keys unchanged by compiling

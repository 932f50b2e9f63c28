"""BNStatsFrozen (src/models/bn_stats.py): a train-mode forward inside it is the train-mode forward (batch
statistics, same output and gradients) but leaves the running statistics and ``num_batches_tracked`` as they
were; momentum is restored on exit."""

from __future__ import annotations

import copy

import torch
from torch import nn

from src.models.bn_stats import BNStatsFrozen


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                         nn.BatchNorm2d(2))  # fmt: skip


def test_forward_is_train_mode_but_running_statistics_stay():
    net = _net().train()
    net(torch.randn(2, 3, 8, 8))  # some running statistics to keep
    ref = copy.deepcopy(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    with BNStatsFrozen(net):
        out = net(x)
    out_ref = ref(x)  # the ordinary train-mode forward
    assert torch.allclose(out, out_ref)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(out_ref.square().sum(), x)
    assert torch.allclose(g, g_ref)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running mean / var, num_batches_tracked
    assert not torch.equal(ref.state_dict()["1.running_mean"], before["1.running_mean"])  # the plain forward
    assert [m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)] == [0.1, 0.1]


def test_momentum_is_restored_after_an_exception_and_none_is_kept():
    net = _net()
    net[1].momentum = None  # cumulative average
    try:
        with BNStatsFrozen(net):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert net[1].momentum is None and net[4].momentum == 0.1

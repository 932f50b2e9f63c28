"""DAFormer optimiser groups and the warm-up + poly schedule (daformer_mic.md §5)."""

import pytest
import torch
from torch import nn

from src.optim import PolyWarmup, build_adamw


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.ModuleDict({"conv": nn.Conv2d(3, 4, 1), "norm1": nn.LayerNorm(4)})
        self.head = nn.ModuleDict({"conv": nn.Conv2d(4, 2, 1), "bn": nn.BatchNorm2d(2)})


def test_param_groups_follow_mmcv_custom_keys():
    opt = build_adamw(_Toy(), lr=6e-5, weight_decay=0.01)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["head"]["lr"] == pytest.approx(6e-4)
    assert groups["head"]["weight_decay"] == 0.01  # "head" matched before "norm": decoder BN decayed
    assert len(groups["head"]["params"]) == 4
    assert groups["no_decay"]["weight_decay"] == 0.0 and len(groups["no_decay"]["params"]) == 2
    assert groups["default"]["lr"] == pytest.approx(6e-5) and len(groups["default"]["params"]) == 2


def test_poly_warmup_values():
    f = PolyWarmup(max_steps=40000, warmup_steps=1500, warmup_ratio=1e-6, power=1.0)
    assert f(0) == pytest.approx(1e-6)
    t = 750
    assert f(t) == pytest.approx((1 - t / 40000) * (1 - (1 - t / 1500) * (1 - 1e-6)))
    assert f(1500) == pytest.approx(1 - 1500 / 40000)
    assert f(20000) == pytest.approx(0.5)
    assert f(40000) == 0.0


def test_lambda_lr_state_dict_is_plain_data():
    opt = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, PolyWarmup(max_steps=10, warmup_steps=2))
    state = sched.state_dict()
    assert state["lr_lambdas"][0]["max_steps"] == 10

"""EMA teacher: α ramp, parameter-only EMA, pseudo-label forward modes (daformer_mic.md §1.2, §1.4)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from src.uda.teacher import EMATeacher


class TinySeg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)  # 1x1: an input offset is a per-channel shift
        self.bn = nn.BatchNorm2d(4)
        self.drop_path = DropPath(0.5)
        self.drop = nn.Dropout2d(0.5)
        self.cls = nn.Conv2d(4, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x)))
        h = h + self.drop_path(h)
        return self.cls(self.drop(F.avg_pool2d(h, 4)))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture
def student() -> TinySeg:
    torch.manual_seed(0)
    return TinySeg()


def test_alpha_ramp_values() -> None:
    assert EMATeacher.alpha_at(0, 0.999) == 0.0
    assert EMATeacher.alpha_at(1, 0.999) == pytest.approx(0.5)
    assert EMATeacher.alpha_at(9, 0.999) == pytest.approx(0.9)
    assert EMATeacher.alpha_at(999, 0.999) == pytest.approx(0.999)
    assert EMATeacher.alpha_at(5000, 0.999) == 0.999
    assert EMATeacher.alpha_at(5000, 0.99) == 0.99


def test_teacher_is_frozen_submodule(student: TinySeg) -> None:
    t = EMATeacher(student=student)
    assert all(not p.requires_grad for p in t.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert "model.conv.weight" in t.state_dict() and "model.bn.running_mean" in t.state_dict()


def test_update_is_ema_of_parameters_only(student: TinySeg) -> None:
    t = EMATeacher(student=student, alpha=0.999)
    # step 0 copies the parameters
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    t.update(student, 0)
    for pt, ps in zip(t.model.parameters(), student.parameters()):
        assert torch.equal(pt, ps)

    # change the student's parameters and BN buffers, then EMA at step 3 (α = 0.75)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(-2.0).add_(0.3)
    student.train()
    student(torch.randn(2, 3, 16, 16) * 5 + 3)  # updates the student's running stats
    before_params = [p.clone() for p in t.model.parameters()]
    before_bufs = {k: b.clone() for k, b in t.model.named_buffers()}
    a = t.update(student, 3)
    assert a == pytest.approx(0.75)
    for pt, p0, ps in zip(t.model.parameters(), before_params, student.parameters()):
        torch.testing.assert_close(pt, 0.75 * p0 + 0.25 * ps)
    for k, b in t.model.named_buffers():
        assert torch.equal(b, before_bufs[k]), f"buffer {k} must not be averaged"
    assert not torch.equal(t.model.bn.running_mean, student.bn.running_mean)


def test_update_rejects_other_architecture(student: TinySeg) -> None:
    t = EMATeacher(student=student)
    with pytest.raises(ValueError):
        t.update(nn.Linear(2, 2), 1)


def test_predict_dropout_off_bn_train(student: TinySeg) -> None:
    t = EMATeacher(student=student)
    t.eval()  # whatever the parent's mode, predict sets the pseudo-label modes
    x = torch.randn(2, 3, 16, 16)
    rm0 = t.model.bn.running_mean.clone()
    p1 = t.predict(x)
    assert p1.shape == (2, 5, 16, 16) and p1.dtype == torch.float32 and not p1.requires_grad
    torch.testing.assert_close(p1.sum(1), torch.ones(2, 16, 16))
    assert t.model.bn.training and not t.model.drop.training and not t.model.drop_path.training
    # dropout / drop-path off: deterministic
    torch.testing.assert_close(t.predict(x), p1)
    # BN uses the batch statistics: a constant input offset is normalised away (not in eval mode)
    torch.testing.assert_close(t.predict(x + 50.0), p1, atol=1e-4, rtol=1e-4)
    assert not torch.equal(t.model.bn.running_mean, rm0)  # train-mode BN updates the teacher's buffers


def test_predict_bn_eval(student: TinySeg) -> None:
    t = EMATeacher(student=student, bn_mode="eval")
    x = torch.randn(2, 3, 16, 16)
    rm0 = t.model.bn.running_mean.clone()
    p = t.predict(x)
    assert not t.model.bn.training
    assert torch.equal(t.model.bn.running_mean, rm0)
    ref = copy.deepcopy(student).eval()
    torch.testing.assert_close(p, torch.softmax(ref.predict(x), 1))
    assert not torch.allclose(t.predict(x + 50.0), p, atol=1e-3)

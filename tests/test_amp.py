"""Mixed precision: under bf16 autocast the networks run in bf16, while teacher softmax, pseudo-label
confidences and weights, and every loss stay float32; a few bf16 training steps on the CPU are finite."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import src.uda.module as module_mod
from src.models.losses import weighted_cross_entropy
from src.train import train
from src.uda.cdm import ClassDecoupledPseudoLabeler
from src.uda.feature_distance import feature_distance
from src.uda.pseudo_label import PseudoLabeler
from src.uda.teacher import EMATeacher


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 1)

    def predict(self, x):
        return self.conv(x)


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_teacher_softmax_is_float32_under_autocast():
    teacher = EMATeacher(student=_Tiny())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with _bf16():
        logits = teacher.model.predict(x)
        probs = teacher.predict(x)
    assert logits.dtype == torch.bfloat16  # the network does run in bf16
    assert probs.dtype == torch.float32
    # the softmax of the bf16 logits, taken in float32 (not a bf16 softmax)
    torch.testing.assert_close(probs, torch.softmax(logits.float(), 1), rtol=0, atol=0)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 8, 8))


def test_pseudo_labels_and_weights_are_float32():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(2, 19, 16, 16, generator=g) * 4, 1)
    for labeler in (PseudoLabeler(), PseudoLabeler(weight_mode="pixel"),
                    ClassDecoupledPseudoLabeler(warmup_steps=0)):  # fmt: skip
        with _bf16():
            y, w, p = labeler(probs.bfloat16(), step=5)
        assert y.dtype == torch.long and w.dtype == torch.float32 and p.dtype == torch.float32
    # DACS's quality weight: the confident share, exact in float32 (0.968 is not representable in bf16)
    with _bf16():
        _, w, p = PseudoLabeler()(probs, step=0)
    assert w[0, 0, 0].item() == pytest.approx((probs.max(1).values >= 0.968).float().mean().item())


def test_losses_are_float32_from_bf16_logits():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 19, 8, 8, generator=g).bfloat16()
    target = torch.randint(0, 19, (2, 16, 16), generator=g)
    target[0, :4] = 255
    weight = torch.rand(2, 16, 16, generator=g)
    with _bf16():
        loss = weighted_cross_entropy(logits, target, weight)
    assert loss.dtype == torch.float32
    up = F.interpolate(logits.float(), size=(16, 16), mode="bilinear", align_corners=False)
    ref = (F.cross_entropy(up, target, ignore_index=255, reduction="none") * weight).mean()
    torch.testing.assert_close(loss, ref)
    feats = torch.randn(2, 8, 4, 4, generator=g)
    with _bf16():
        fd = feature_distance(feats.bfloat16(), feats.bfloat16() + 1)
    assert fd.dtype == torch.float32
    assert fd.item() == pytest.approx(math.sqrt(8.0), rel=1e-3)  # ||(+1,...,+1)||_2 over 8 channels


def test_bf16_training_steps_on_cpu(train_cfg, monkeypatch):
    """DAFormer (source CE + ImageNet FD, teacher, ClassMix) for 2 bf16-mixed steps: the student's logits
    are bf16, teacher probabilities and every loss float32 and finite."""
    seen = {"logits": set(), "loss": set(), "probs": set()}
    wce, predict = module_mod.weighted_cross_entropy, EMATeacher.predict

    def spy_wce(logits, *a, **k):
        out = wce(logits, *a, **k)
        seen["logits"].add(logits.dtype)
        seen["loss"].add(out.dtype)
        return out

    def spy_predict(self, x):
        out = predict(self, x)
        seen["probs"].add((out.dtype, torch.is_autocast_enabled("cpu")))
        return out

    monkeypatch.setattr(module_mod, "weighted_cross_entropy", spy_wce)
    monkeypatch.setattr(EMATeacher, "predict", spy_predict)
    cfg = train_cfg("experiment=daformer_synthetic", "trainer.precision=bf16-mixed", "trainer.max_steps=2",
                    "trainer.val_check_interval=2")  # fmt: skip
    out = train(cfg)
    assert seen["logits"] == {torch.bfloat16} and seen["loss"] == {torch.float32}
    assert seen["probs"] == {(torch.float32, True)}  # computed under autocast, returned in float32
    rows = list(csv.DictReader(Path(cfg.paths.output_dir, "csv", "metrics.csv").open()))
    losses = [
        float(r[k]) for r in rows for k in ("train/loss_src", "train/loss_fd", "train/loss_mix") if r.get(k)
    ]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert out["steps"] == 2 and out["mIoU"] is not None

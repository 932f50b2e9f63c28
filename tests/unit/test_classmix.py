"""ClassMix: masks, batch-level class set quirk, label/weight consistency (daformer_mic.md §1.3)."""

from __future__ import annotations

import torch

from src.uda.augment import StrongAugment
from src.uda.mixing.classmix import ClassMix, MixOutput


def _source_labels() -> torch.Tensor:
    """Sample 0: quadrants of classes 0, 1, 2, 255; sample 1: all class 5."""
    y = torch.full((2, 64, 64), 5, dtype=torch.long)
    y[0, :32, :32] = 0
    y[0, :32, 32:] = 1
    y[0, 32:, :32] = 2
    y[0, 32:, 32:] = 255
    return y


def _quadrants(m: torch.Tensor) -> list[float]:
    return [
        float(m[:32, :32].mean()),
        float(m[:32, 32:].mean()),
        float(m[32:, :32].mean()),
        float(m[32:, 32:].mean()),
    ]


def test_choose_ceil_half() -> None:
    cm = ClassMix()
    g = torch.Generator().manual_seed(0)
    for n, k in [(1, 1), (2, 1), (4, 2), (5, 3), (19, 10)]:
        chosen = cm._choose(torch.arange(n), g)
        assert chosen.numel() == k and chosen.unique().numel() == k


def test_batch_class_set_includes_other_samples_and_ignore() -> None:
    y = _source_labels()
    cm = ClassMix(class_choice="batch")
    g = torch.Generator().manual_seed(0)
    n_quads, ignore_quad, full1 = [], 0, 0
    for _ in range(300):
        m = cm.masks(y, g)
        assert m.shape == (2, 1, 64, 64) and m.dtype == torch.float32
        q = _quadrants(m[0, 0])
        assert all(v in (0.0, 1.0) for v in q)  # whole class regions
        n_quads.append(int(sum(q)))
        ignore_quad += int(q[3])
        full1 += int(m[1].all())
        assert m[1].all() or not m[1].any()
    # batch set {0, 1, 2, 5, 255}: n = 5 -> 3 classes per sample, so sample 0 gets 2 or 3 of its 4 regions
    assert set(n_quads) == {2, 3}
    assert ignore_quad > 0  # 255 is part of the class set
    assert abs(full1 / 300 - 3 / 5) < 0.08  # P(5 chosen) = 3/5


def test_sample_class_set_excludes_ignore() -> None:
    y = _source_labels()
    cm = ClassMix(class_choice="sample")
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        m = cm.masks(y, g)
        q = _quadrants(m[0, 0])
        assert sum(q) == 2 and q[3] == 0  # {0, 1, 2}: ceil(3/2) = 2, 255 never chosen
        assert m[1].all()  # one class -> always chosen


def test_mix_label_weight_consistency() -> None:
    g0 = torch.Generator().manual_seed(1)
    y_s = _source_labels()
    x_s = torch.randn(2, 3, 64, 64, generator=g0)
    x_t = torch.randn(2, 3, 64, 64, generator=g0)
    y_t = torch.randint(0, 19, (2, 64, 64), generator=g0)
    w_t = torch.full((2, 64, 64), 0.4)
    out = ClassMix()(x_s, y_s, x_t, y_t, w_t, torch.Generator().manual_seed(2))
    assert isinstance(out, MixOutput)
    m = out.mask
    mb = m[:, 0].bool()
    assert mb.any() and (~mb).any()
    torch.testing.assert_close(out.x_mix, m * x_s + (1 - m) * x_t)
    assert out.y_mix.dtype == torch.long and out.w_mix.dtype == torch.float32
    assert torch.equal(out.y_mix[mb], y_s[mb]) and torch.equal(out.y_mix[~mb], y_t[~mb])
    assert (out.w_mix[mb] == 1).all() and (out.w_mix[~mb] == 0.4).all()


def test_augment_applies_to_images_only() -> None:
    g0 = torch.Generator().manual_seed(1)
    y_s = _source_labels()
    x_s = torch.randn(2, 3, 64, 64, generator=g0).clamp(-1.5, 1.5)
    x_t = torch.randn(2, 3, 64, 64, generator=g0).clamp(-1.5, 1.5)
    y_t = torch.randint(0, 19, (2, 64, 64), generator=g0)
    w_t = torch.full((2, 64, 64), 0.4)
    plain = ClassMix()(x_s, y_s, x_t, y_t, w_t, torch.Generator().manual_seed(5))
    aug = StrongAugment(color_jitter_p=0.0, blur_p=0.0)  # both (almost surely) applied
    mixed = ClassMix(augment=aug)(x_s, y_s, x_t, y_t, w_t, torch.Generator().manual_seed(5))
    assert torch.equal(mixed.mask, plain.mask)  # masks are drawn before the augmentation
    assert torch.equal(mixed.y_mix, plain.y_mix) and torch.equal(mixed.w_mix, plain.w_mix)
    assert not torch.allclose(mixed.x_mix, plain.x_mix, atol=1e-3)
    again = ClassMix(augment=aug)(x_s, y_s, x_t, y_t, w_t, torch.Generator().manual_seed(5))
    assert torch.equal(again.x_mix, mixed.x_mix)  # deterministic under a fixed generator

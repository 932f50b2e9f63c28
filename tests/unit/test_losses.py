"""Weighted CE with the mmseg 0.16 all-pixel mean (daformer_mic.md §1.2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from src.models.losses import weighted_cross_entropy


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 19, 64, 64, generator=g), torch.randint(0, 19, (2, 64, 64), generator=g)


def test_equals_cross_entropy_without_weight_and_ignore() -> None:
    logits, y = _data()
    torch.testing.assert_close(weighted_cross_entropy(logits, y), F.cross_entropy(logits, y))
    torch.testing.assert_close(
        weighted_cross_entropy(logits, y, torch.ones(2, 64, 64)), F.cross_entropy(logits, y)
    )
    torch.testing.assert_close(
        weighted_cross_entropy(logits, y, torch.full((2, 64, 64), 0.25)), 0.25 * F.cross_entropy(logits, y)
    )


def test_hand_computed_all_pixel_denominator() -> None:
    logits = torch.zeros(1, 2, 2, 2)  # CE = ln 2 everywhere
    y = torch.tensor([[[0, 1], [255, 255]]])
    assert weighted_cross_entropy(logits, y).item() == pytest.approx(math.log(2) / 2)  # 2 valid / 4 pixels
    assert weighted_cross_entropy(logits, y, reduction="valid_pixels").item() == pytest.approx(math.log(2))
    w = torch.tensor([[[1.0, 0.5], [1.0, 1.0]]])
    assert weighted_cross_entropy(logits, y, w).item() == pytest.approx(1.5 * math.log(2) / 4)
    assert weighted_cross_entropy(logits, torch.full((1, 2, 2), 255)).item() == 0.0


def test_ignore_matches_torch_sum_over_all_pixels() -> None:
    logits, y = _data()
    y[:, :10] = 255
    expected = F.cross_entropy(logits, y, ignore_index=255, reduction="sum") / y.numel()
    torch.testing.assert_close(weighted_cross_entropy(logits, y), expected)
    torch.testing.assert_close(
        weighted_cross_entropy(logits, y, reduction="valid_pixels"),
        F.cross_entropy(logits, y, ignore_index=255),
    )


def test_logits_resized_bilinear_and_float32() -> None:
    logits, y = _data()
    small = logits[:, :, ::4, ::4].contiguous()
    up = F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(weighted_cross_entropy(small, y[:, None]), F.cross_entropy(up, y))
    half = small.to(torch.bfloat16).requires_grad_(True)
    loss = weighted_cross_entropy(half, y)
    assert loss.dtype == torch.float32
    ref = F.cross_entropy(F.interpolate(half.detach().float(), size=(64, 64), mode="bilinear"), y)
    torch.testing.assert_close(loss.detach(), ref)
    loss.backward()
    assert half.grad is not None and half.grad.dtype == torch.bfloat16


def test_align_corners_resize_is_advents_upsample() -> None:
    """The video references upsample with nn.Upsample(align_corners=True) before ADVENT's loss_calc."""
    logits, y = _data()
    small = logits[:, :, ::4, ::4].contiguous()
    up = F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=True)
    torch.testing.assert_close(
        weighted_cross_entropy(small, y, reduction="valid_pixels", align_corners=True), F.cross_entropy(up, y)
    )
    assert not torch.allclose(
        weighted_cross_entropy(small, y), weighted_cross_entropy(small, y, align_corners=True)
    )

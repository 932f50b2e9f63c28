"""DACS strong augmentation: decisions, kornia-0.5 colour ops, Gaussian blur (daformer_mic.md §1.3)."""

from __future__ import annotations

import math

import pytest
import torch

from src.uda.augment import (
    MEAN,
    STD,
    StrongAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    denormalize,
    gaussian_blur,
    hsv_to_rgb,
    normalize,
    rgb_to_hsv,
)


def _images(seed: int = 0, b: int = 2, h: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.rand(b, 3, h, h, generator=g))


def test_normalisation_constants_and_roundtrip() -> None:
    mean01 = torch.tensor(MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2) / 255
    assert torch.allclose(normalize(mean01), torch.zeros(1, 3, 2, 2), atol=1e-6)
    white = normalize(torch.ones(1, 3, 1, 1)).flatten()
    torch.testing.assert_close(white, torch.tensor([(255 - m) / s for m, s in zip(MEAN, STD)]))
    x = _images()
    torch.testing.assert_close(normalize(denormalize(x)), x, atol=1e-5, rtol=0)


def test_blur_kernel_size_formula() -> None:
    assert blur_kernel_size(512) == 51
    assert blur_kernel_size(1024) == 103
    assert blur_kernel_size(64) == 7  # ceil(6.4) = 7 (odd): floor(7 - 0.5 + 1) = 7
    assert blur_kernel_size(60) == 5  # ceil(6.0) = 6 (even): floor(6 - 0.5 + 0) = 5
    assert all(blur_kernel_size(n) % 2 == 1 for n in range(8, 2049, 37))


def test_draw_probabilities() -> None:
    g = torch.Generator().manual_seed(1)
    aug = StrongAugment()
    draws = [aug.draw(g) for _ in range(4000)]
    jit = sum(d["color_jitter"] for d in draws) / len(draws)
    blur = sum(d["blur"] for d in draws) / len(draws)
    assert abs(jit - 0.8) < 0.025 and abs(blur - 0.5) < 0.03
    no_blur = StrongAugment(blur=False)
    assert not any(no_blur.draw(g)["blur"] for _ in range(200))


def test_colour_ops_hand_values() -> None:
    x = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    torch.testing.assert_close(adjust_brightness(x, 0.15).flatten(), torch.tensor([0.35, 0.65, 1.0]))
    torch.testing.assert_close(adjust_contrast(x, 1.2).flatten(), torch.tensor([0.24, 0.6, 1.0]))
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(rgb_to_hsv(red).flatten(), torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(adjust_hue(red, 1 / 3).flatten(), torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(adjust_hue(red, -1 / 3).flatten(), torch.tensor([0.0, 0.0, 1.0]))
    # saturation: (1, .5, .5) has S = .5; ×0.5 -> S = .25 -> (1, .75, .75)
    pink = torch.tensor([1.0, 0.5, 0.5]).view(1, 3, 1, 1)
    torch.testing.assert_close(adjust_saturation(pink, 0.5).flatten(), torch.tensor([1.0, 0.75, 0.75]))
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-5, rtol=0)


def test_jitter_identity_when_strength_zero() -> None:
    x = _images()
    aug = StrongAugment(color_jitter_strength=0.0, blur=False)
    out = aug(x, {"color_jitter": True, "blur": False}, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-4, rtol=0)


def test_jitter_factors_per_sample_and_bounded() -> None:
    x = _images(b=1).repeat(2, 1, 1, 1)  # two identical images
    aug = StrongAugment()
    out = aug(x, {"color_jitter": True, "blur": False}, torch.Generator().manual_seed(3))
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # different factors per sample
    assert not torch.allclose(out, x, atol=1e-3)
    d = denormalize(out)
    assert d.min() >= -1e-5 and d.max() <= 1 + 1e-5  # clamped in denormalised space


def test_no_op_when_nothing_drawn() -> None:
    x = _images()
    out = StrongAugment()(x, {"color_jitter": False, "blur": False}, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_gaussian_blur_impulse_response_and_constant() -> None:
    img = torch.zeros(1, 1, 15, 15)
    img[0, 0, 7, 7] = 1.0
    sigma = 1.0
    g1 = torch.tensor([math.exp(-(i**2) / (2 * sigma**2)) for i in range(-3, 4)])
    g1 = g1 / g1.sum()
    out = gaussian_blur(img, torch.tensor([sigma]), (7, 7))
    torch.testing.assert_close(out[0, 0, 4:11, 4:11], torch.outer(g1, g1))
    assert out[0, 0, :4].abs().max() == 0
    const = torch.full((2, 3, 16, 16), 0.7)
    torch.testing.assert_close(gaussian_blur(const, torch.tensor([0.3, 1.1]), (7, 7)), const)


def test_blur_sigma_per_sample() -> None:
    x = _images(b=1).repeat(2, 1, 1, 1)
    out = StrongAugment()(x, {"color_jitter": False, "blur": True}, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    assert out.std() < x.std()  # smoothing lowers the variance of noise images


@pytest.mark.parametrize("params", [{"color_jitter": True, "blur": True}])
def test_determinism_under_fixed_generator(params: dict[str, bool]) -> None:
    x = _images()
    aug = StrongAugment()
    a = aug(x, params, torch.Generator().manual_seed(7))
    b = aug(x, params, torch.Generator().manual_seed(7))
    c = aug(x, params, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)

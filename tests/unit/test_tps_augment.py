"""TPS's own strong view (video_uda.md §3.3 step 3, src/uda/video/tps_augment.py) against torchvision's
functional ops, which implement the PIL semantics the reference runs, and its use in the TPS view."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from hydra.utils import instantiate

from src.uda.augment import denormalize, normalize
from src.uda.video.tps_augment import TPSStrongAugment
from tests.conftest import compose_cfg

ONLY_JITTER = dict(blur_p=0.0, jitter_p=1.0, grayscale_p=0.0)


def _image(seed: int = 0, shape=(2, 3, 32, 48)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.rand(shape, generator=g))


def test_colour_jitter_is_torchvisions_color_jitter_in_the_drawn_order():
    aug = TPSStrongAugment(**ONLY_JITTER)
    x01 = denormalize(_image()[:1]).clamp(0, 1)
    u, order = [0.1, 0.9, 0.3, 0.8], [2, 0, 3, 1]
    got = aug.jitter_one(x01, u, order)
    want = x01
    for op in order:  # f ~ U[0.2, 1.8] for brightness, contrast, saturation; hue ~ U[-0.2, 0.2]
        if op == 0:
            want = TF.adjust_brightness(want, 0.2 + 1.6 * u[0])
        elif op == 1:
            want = TF.adjust_contrast(want, 0.2 + 1.6 * u[1])
        elif op == 2:
            want = TF.adjust_saturation(want, 0.2 + 1.6 * u[2])
        else:
            want = TF.adjust_hue(want, -0.2 + 0.4 * u[3])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_blur_is_a_gaussian_of_the_radius_scaled_to_the_frame_height():
    x = _image(1, (1, 3, 128, 64))
    # radius 7 px of a 512-row frame -> sigma 1.75 on 128 rows
    aug = TPSStrongAugment(blur_p=1.0, blur_radii=[7.0], jitter_p=0.0, grayscale_p=0.0)
    got = denormalize(aug(x, aug.draw(torch.Generator()), torch.Generator().manual_seed(0)))
    want = TF.gaussian_blur(denormalize(x).clamp(0, 1), kernel_size=[13, 13], sigma=[1.75, 1.75])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    unscaled = TPSStrongAugment(
        blur_p=1.0, blur_radii=[2.0], reference_height=None, jitter_p=0.0, grayscale_p=0.0
    )
    got = denormalize(unscaled(x, {}, torch.Generator().manual_seed(0)))
    want = TF.gaussian_blur(denormalize(x).clamp(0, 1), kernel_size=[13, 13], sigma=[2.0, 2.0])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_grayscale_sets_every_channel_to_the_luma():
    aug = TPSStrongAugment(blur_p=0.0, jitter_p=0.0, grayscale_p=1.0)
    x = _image(2)
    got = denormalize(aug(x, {}, torch.Generator().manual_seed(0)))
    # torchvision weighs red 0.2989, PIL (the reference's convert("L")) 0.299
    torch.testing.assert_close(got, TF.rgb_to_grayscale(denormalize(x).clamp(0, 1), 3), atol=2e-4, rtol=0)


def test_draws_are_per_sample_and_replay_with_the_generator_for_the_second_frame():
    aug = TPSStrongAugment()
    x = _image(3)
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    a = aug(x, aug.draw(g), g)
    g.set_state(state)
    b = aug(x, aug.draw(g), g)
    torch.testing.assert_close(a, b)  # the same draws give the same view
    twins = aug(x[:1].expand(4, -1, -1, -1), {}, g)
    assert not all(torch.allclose(twins[0], twins[i]) for i in (1, 2, 3))  # per-sample draws
    # brightness only: frame t-1 gets the factor of frame t (the reference augments the concatenated pair)
    bright = TPSStrongAugment(**ONLY_JITTER, contrast=0.0, saturation=0.0, hue=0.0)
    dark = normalize(torch.full((1, 3, 8, 8), 0.2))
    g.set_state(state)
    f_t = denormalize(bright(dark, {}, g))
    g.set_state(state)
    f_prev = denormalize(bright(normalize(torch.full((1, 3, 8, 8), 0.4)), {}, g))
    torch.testing.assert_close(f_prev, (2 * f_t).clamp(max=1.0), atol=1e-5, rtol=0)


def test_the_pair_is_augmented_as_one_concatenated_image():
    # the reference concatenates d over c and augments once (video_uda.md §3.3 step 3): contrast blends each
    # frame toward the *pair's* mean luma, and the TPS view uses it
    contrast = TPSStrongAugment(**ONLY_JITTER, brightness=0.0, saturation=0.0, hue=0.0)
    d, c = torch.full((1, 3, 8, 8), 0.2), torch.full((1, 3, 8, 8), 0.6)
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    got_d, got_c = contrast.pair(normalize(d), normalize(c), {}, g)
    g.set_state(state)
    u = torch.rand(7, generator=g, dtype=torch.float64).tolist()
    f = 0.2 + 1.6 * u[4]
    mean = 0.4  # the pair's, not 0.2 / 0.6 per frame
    for got, frame in ((got_d, d), (got_c, c)):
        want = (f * frame + (1 - f) * mean).clamp(0, 1)
        torch.testing.assert_close(denormalize(got), want, atol=1e-5, rtol=0)
    # the blur is scaled to one frame's height and reaches across the seam
    blur = TPSStrongAugment(blur_p=1.0, blur_radii=[7.0], jitter_p=0.0, grayscale_p=0.0)
    x, x_prev = _image(4, (1, 3, 64, 32)), _image(5, (1, 3, 64, 32))
    got, got_prev = blur.pair(x, x_prev, {}, torch.Generator().manual_seed(0))
    both = denormalize(torch.cat([x, x_prev], dim=-2)).clamp(0, 1)  # sigma 7 * 64 / 512 = 0.875
    want = TF.gaussian_blur(both, kernel_size=[7, 7], sigma=[0.875, 0.875])
    torch.testing.assert_close(denormalize(torch.cat([got, got_prev], dim=-2)), want, atol=1e-4, rtol=0)
    cfg = compose_cfg(overrides=["experiment=tps_synthetic_video", "uda/augment@uda.pseudo.augment=tps"])
    tps = instantiate(cfg.uda.pseudo)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    view = tps.strong_view(x, x_prev, g)
    g.set_state(state)
    expected = tps.augment.pair(x, x_prev, tps.augment.draw(g), g)
    for a, b in zip(view, expected):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="frames of different shapes"):
        contrast.pair(x, x_prev[..., :32, :], {}, g)


def test_the_tps_view_config_builds_it_and_the_bad_values_are_refused():
    cfg = compose_cfg(overrides=["experiment=tps_synthetic_video", "uda/augment@uda.pseudo.augment=tps"])
    default = compose_cfg(overrides=["experiment=tps_synthetic_video"])
    assert isinstance(instantiate(cfg.uda.pseudo.augment), TPSStrongAugment)
    assert default.uda.pseudo.augment._target_ == "src.uda.augment.StrongAugment"
    with pytest.raises(ValueError, match="blur_p must be a probability"):
        TPSStrongAugment(blur_p=1.5)
    with pytest.raises(ValueError, match="hue must be in"):
        TPSStrongAugment(hue=0.8)
    with pytest.raises(ValueError, match="blur_radii"):
        TPSStrongAugment(blur_radii=[])

"""Optical flow (src/data/flow.py): the int16 x 10 file format, resizing, flipping, warping and OpenCV DIS."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from src.data.flow import (
    compute_dis_flow,
    endpoint_error,
    flip_flow,
    read_flow,
    resize_flow,
    warp,
    write_flow,
)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth multi-scale RGB texture (uint8) that DIS can track."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), np.float32)
    for cell, amp in ((32, 60), (8, 40), (3, 20)):
        small = rng.standard_normal((h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        acc += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(128 + acc, 0, 255).astype(np.uint8)


def _shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """J(p) = img(p + (dx, dy)): the frame whose backward flow to `img` is the constant (dx, dy)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)  # fmt: skip


def test_int16_x10_roundtrip_truncates_and_names_the_missing_file(tmp_path):
    f = np.array([[[1.27, -1.27], [0.04, 3276.9]]], np.float32)  # 1x2x2
    path = tmp_path / "aachen_000000_000019_000018_int16_x10.npy"
    write_flow(path, f)
    raw = np.load(path)
    assert raw.dtype == np.int16 and raw.shape == (1, 2, 2)
    assert raw.tolist() == [[[12, -12], [0, 32767]]]  # trunc(x * 10), clipped to int16 (video_uda.md §2.2)
    np.testing.assert_allclose(read_flow(path), [[[1.2, -1.2], [0.0, 3276.7]]], atol=1e-6)
    # a (2, H, W) tensor is written as H x W x 2
    write_flow(path, torch.tensor([[[1.0, 2.0, 5.0]], [[3.0, 4.0, 6.0]]]))  # (2, 1, 3)
    np.testing.assert_allclose(read_flow(path)[0], [[1.0, 3.0], [2.0, 4.0], [5.0, 6.0]])
    np.save(tmp_path / "f32.npy", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="int16"):
        read_flow(tmp_path / "f32.npy")
    with pytest.raises(FileNotFoundError, match="nope_int16_x10.npy.*compute_flow.py"):
        read_flow(tmp_path / "nope_int16_x10.npy")
    with pytest.raises(FileNotFoundError, match="my fix"):
        read_flow(tmp_path / "nope_int16_x10.npy", fix="my fix")


def test_resize_flow_scales_each_component_with_its_axis():
    f = torch.zeros(2, 8, 16)
    f[0], f[1] = 3.0, -2.0
    g = resize_flow(f, (4, 4))  # height / 2, width / 4
    assert g.shape == (2, 4, 4)
    torch.testing.assert_close(g[0], torch.full((4, 4), 0.75))
    torch.testing.assert_close(g[1], torch.full((4, 4), -1.0))
    assert resize_flow(f, (8, 16)) is f or torch.equal(resize_flow(f, (8, 16)), f)


def test_flip_flow_negates_u_and_the_tps_quirk_does_not():
    f = torch.stack([torch.arange(6.0).view(2, 3), torch.ones(2, 3)])  # u = column ramp
    g = flip_flow(f)
    torch.testing.assert_close(g[0], -f[0].flip(-1))
    torch.testing.assert_close(g[1], f[1].flip(-1))
    q = flip_flow(f, negate_u=False)
    torch.testing.assert_close(q[0], f[0].flip(-1))


def test_warp_with_a_constant_flow_shifts_the_image_and_commutes_with_flipping():
    img = torch.from_numpy(_texture(32, 48)).permute(2, 0, 1)[None].float()
    flow = torch.zeros(1, 2, 32, 48)
    flow[:, 0], flow[:, 1] = 3.0, -2.0  # I_t(p) = I_s(p + (3, -2))
    out = warp(img, flow)
    torch.testing.assert_close(out[..., 2:, :-3], img[..., :-2, 3:], atol=1e-3, rtol=0)
    # mirroring both frames and the flow (u negated) gives the mirrored warp: flip_flow is consistent
    flipped = warp(img.flip(-1), flip_flow(flow))
    torch.testing.assert_close(flipped, out.flip(-1), atol=1e-3, rtol=0)
    # the TPS quirk (u not negated) is not consistent
    quirk = warp(img.flip(-1), flip_flow(flow, negate_u=False))
    assert (quirk - out.flip(-1)).abs().mean() > 5


def test_dis_flow_is_the_backward_flow_t_to_s():
    frame_s = _texture(128, 256)
    frame_t = _shift(frame_s, 3.0, -2.0)  # I_t(p) = I_s(p + (3, -2))
    f = compute_dis_flow(frame_t, frame_s, "medium")
    assert f.shape == (128, 256, 2) and f.dtype == np.float32
    inner = f[16:-16, 16:-16]
    np.testing.assert_allclose(np.median(inner.reshape(-1, 2), 0), [3.0, -2.0], atol=0.1)
    truth = np.broadcast_to(np.float32([3.0, -2.0]), inner.shape)
    assert endpoint_error(inner, truth) < 0.3
    # scale 0.5: computed on half-size frames, returned at that size in its pixels
    h = compute_dis_flow(frame_t, frame_s, "fast", scale=0.5)
    assert h.shape == (64, 128, 2)
    np.testing.assert_allclose(np.median(h[8:-8, 8:-8].reshape(-1, 2), 0), [1.5, -1.0], atol=0.15)
    with pytest.raises(ValueError, match="dis_preset"):
        compute_dis_flow(frame_t, frame_s, "slowest")


def test_endpoint_error_masks_and_checks_shapes():
    a, b = np.zeros((2, 2, 2)), np.zeros((2, 2, 2))
    b[0, 0] = (3.0, 4.0)
    assert endpoint_error(a, b) == pytest.approx(5.0 / 4)
    mask = np.array([[True, False], [False, False]])
    assert endpoint_error(torch.zeros(2, 2, 2), b, mask) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="shapes differ"):
        endpoint_error(a, np.zeros((3, 2, 2)))

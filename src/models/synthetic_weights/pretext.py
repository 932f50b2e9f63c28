"""The pretext task of the offline ImageNet stand-in: procedural shapes and textures (our design).

What it is: an endless, seeded stream of small images, each a textured background with a few overlapping
objects of 10 generic shapes (ellipse, rectangle, triangle, star, ring, cross, bar, blob, crescent, arrow),
each filled with one of 8 textures (flat, gradient, stripes, checker, dots, noise, waves, grid) in random
colours, under randomised lighting, colour cast, gamma, blur and sensor noise. The labels are per pixel: the
shape class of the object covering it (0 = background) and its texture class. A network that solves it must
see edges, textures, colour contrasts, object extents and occlusion, at several scales — the generic
low- and mid-level vision that ImageNet pre-training gives a segmentation encoder.

What it is not: street scenes. Nothing here draws roads, buildings, vehicles or people, uses the 19
Cityscapes classes, or reads any file of the synthetic benchmark (source or target domain), so weights
pre-trained on it never saw the benchmark's domains or labels.

Determinism: batch ``i`` of seed ``s`` is drawn from ``np.random.default_rng([s, i])`` alone.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["SHAPES", "TEXTURES", "render_batch", "render_image"]

SHAPES: tuple[str, ...] = (
    "ellipse", "rectangle", "triangle", "star", "ring", "cross", "bar", "blob", "crescent", "arrow"
)  # fmt: skip
TEXTURES: tuple[str, ...] = ("flat", "gradient", "stripes", "checker", "dots", "noise", "waves", "grid")


def _texture(rng: np.random.Generator, kind: int, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A (size, size) float32 pattern in [0, 1] of texture ``kind`` (rotated, random frequency/phase)."""
    name = TEXTURES[kind]
    if name == "flat":
        return np.zeros((size, size), np.float32)
    theta = rng.uniform(0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    period = rng.uniform(3.0, 12.0)  # pixels
    f = 2 * math.pi / period
    phase = rng.uniform(0, 2 * math.pi)
    if name == "gradient":
        t = (u - u.min()) / max(float(np.ptp(u)), 1e-6)
        return t.astype(np.float32)
    if name == "stripes":
        return (np.sin(f * u + phase) > rng.uniform(-0.5, 0.5)).astype(np.float32)
    if name == "checker":
        return ((np.sin(f * u + phase) > 0) ^ (np.sin(f * v + phase) > 0)).astype(np.float32)
    if name == "dots":
        return ((np.cos(f * u + phase) * np.cos(f * v + phase)) > rng.uniform(0.3, 0.7)).astype(np.float32)
    if name == "noise":
        cell = int(rng.integers(2, 7))
        small = rng.random((size // cell + 2, size // cell + 2)).astype(np.float32)
        big = cv2.resize(small, (size + 2 * cell, size + 2 * cell), interpolation=cv2.INTER_LINEAR)
        return big[cell : cell + size, cell : cell + size]
    if name == "waves":
        return (0.5 + 0.5 * np.sin(f * u + rng.uniform(1, 4) * np.sin(f * 0.5 * v) + phase)).astype(
            np.float32
        )
    # grid: thin lines along both axes
    width = rng.uniform(0.15, 0.35)
    fu, fv = (np.mod(u / period, 1.0) < width), (np.mod(v / period, 1.0) < width)
    return (fu | fv).astype(np.float32)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour in [0, 1] (uniform in HSV, so saturated and grey colours both occur)."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(20, 255)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _fill(rng: np.random.Generator, kind: int, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """(size, size, 3) float32: texture ``kind`` between two random colours."""
    t = _texture(rng, kind, size, yy, xx)[..., None]
    c1, c2 = _colour(rng), _colour(rng)
    return (1.0 - t) * c1 + t * c2


def _polygon(rng: np.random.Generator, shape: str, r: float) -> np.ndarray:
    """Vertices (N, 2) of a shape of radius ~r centred at 0 (before rotation and stretching)."""
    if shape == "ellipse":
        a = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], 1) * r
    if shape == "rectangle":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * r * 0.8
    if shape == "triangle":
        a = np.array([-math.pi / 2, math.pi / 6, 5 * math.pi / 6])
        return np.stack([np.cos(a), np.sin(a)], 1) * r
    if shape == "star":
        n = int(rng.integers(4, 8))
        a = np.linspace(0, 2 * math.pi, 2 * n, endpoint=False)
        rad = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.35, 0.55))
        return np.stack([np.cos(a) * rad, np.sin(a) * rad], 1) * r
    if shape == "cross":
        w = rng.uniform(0.25, 0.4)
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
               (-1, -w), (-w, -w)]  # fmt: skip
        return np.array(pts, np.float64) * r
    if shape == "bar":
        w = rng.uniform(0.08, 0.2)
        return np.array([[-1, -w], [1, -w], [1, w], [-1, w]], np.float64) * r
    if shape == "blob":
        a = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        k = rng.normal(0, 1, 4)
        rad = 1 + 0.25 * (k[0] * np.sin(2 * a + k[1]) + k[2] * np.sin(3 * a + k[3]))
        return np.stack([np.cos(a) * rad, np.sin(a) * rad], 1) * r * 0.85
    if shape == "arrow":
        w, h = rng.uniform(0.2, 0.35), rng.uniform(0.45, 0.65)
        pts = [(-1, -w), (0.2, -w), (0.2, -h), (1, 0), (0.2, h), (0.2, w), (-1, w)]
        return np.array(pts, np.float64) * r
    raise ValueError(shape)


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """(size, size) bool mask of one object, scale log-uniform from ~2 % to ~60 % of the image side."""
    r = size * math.exp(rng.uniform(math.log(0.05), math.log(0.45)))
    cx, cy = rng.uniform(-0.1, 1.1) * size, rng.uniform(-0.1, 1.1) * size
    mask = np.zeros((size, size), np.uint8)
    if shape in ("ring", "crescent"):
        rr = max(r, 2.0)
        ax = (int(rr), int(rr * rng.uniform(0.6, 1.0)))
        ang = float(rng.uniform(0, 180))
        cv2.ellipse(mask, (int(cx), int(cy)), ax, ang, 0, 360, 1, -1, cv2.LINE_8)
        if shape == "ring":
            inner = (max(1, int(ax[0] * rng.uniform(0.4, 0.7))), max(1, int(ax[1] * rng.uniform(0.4, 0.7))))
            cv2.ellipse(mask, (int(cx), int(cy)), inner, ang, 0, 360, 0, -1, cv2.LINE_8)
        else:
            off = rr * rng.uniform(0.3, 0.6)
            d = rng.uniform(0, 2 * math.pi)
            centre = (int(cx + off * math.cos(d)), int(cy + off * math.sin(d)))
            cv2.ellipse(mask, centre, ax, ang, 0, 360, 0, -1, cv2.LINE_8)
        return mask.astype(bool)
    pts = _polygon(rng, shape, r)
    pts = pts * np.array([1.0, rng.uniform(0.5, 1.5)])  # stretch
    a = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = pts @ rot.T + np.array([cx, cy])
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, cv2.LINE_8)
    return mask.astype(bool)


def _photometric(rng: np.random.Generator, img: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Randomised lighting (gradient), per-channel gain and bias, gamma, blur, noise; in [0, 1]."""
    size = img.shape[0]
    d = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(d) + yy * math.sin(d)) / size
    img = img * (1.0 + rng.uniform(0.0, 0.6) * (ramp - ramp.mean()))[..., None]
    img = img * rng.uniform(0.6, 1.4, 3) + rng.uniform(-0.15, 0.15, 3)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.2:  # grey
        img = np.repeat(img.mean(2, keepdims=True), 3, axis=2)
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=rng.uniform(0.3, 1.2))
    if rng.random() < 0.5:
        img = img + rng.normal(0.0, rng.uniform(0.0, 0.06), img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render_image(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample: (image (size, size, 3) float32 in [0, 1], shape label, texture label) (uint8 each)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    tex = np.zeros((size, size), np.uint8)
    tex[:] = int(rng.integers(len(TEXTURES)))
    img = _fill(rng, int(tex[0, 0]), size, yy, xx)
    shape = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 8))):  # painted back to front: later objects occlude
        s = int(rng.integers(len(SHAPES)))
        k = int(rng.integers(len(TEXTURES)))
        m = _shape_mask(rng, SHAPES[s], size)
        if not m.any():
            continue
        img[m] = _fill(rng, k, size, yy, xx)[m]
        shape[m] = s + 1
        tex[m] = k
    return _photometric(rng, img, yy, xx), shape, tex


def render_batch(seed: int, index: int, batch_size: int, size: int = 64) -> tuple[np.ndarray, ...]:
    """Batch ``index`` of the stream of ``seed``: images (B, 3, size, size) float32 in [0, 1], shape and
    texture labels (B, size, size) int64. A function of (seed, index, batch_size, size) alone."""
    rng = np.random.default_rng([int(seed), int(index)])
    imgs, shapes, texs = zip(*(render_image(rng, size) for _ in range(batch_size)))
    return (np.stack(imgs).transpose(0, 3, 1, 2).copy(), np.stack(shapes).astype(np.int64),
            np.stack(texs).astype(np.int64))  # fmt: skip

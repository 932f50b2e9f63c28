"""DACS strong augmentation: colour jitter and Gaussian blur on normalised images.

Source: DACS / DAFormer `mmseg/models/utils/dacs_transforms.py`, daformer_mic.md §1.2 (step 2) and §1.3.

- The per-step decisions are drawn once per training step and shared by the batch: colour jitter is
  applied iff U(0,1) > ``color_jitter_p`` (so with probability 1 - 0.2 = 0.8 by default, the reference's
  comparison direction) and blur iff ``blur`` and U(0,1) > 0.5.
- Colour jitter re-implements kornia 0.5.8 ``ColorJitter(b=c=s=h=0.2)`` (today's kornia ``ColorJiggle``)
  without kornia: factors drawn **per sample**, brightness is an *additive* shift by (factor - 1), contrast a
  plain multiplication (no mean blending, unlike torchvision), saturation a scaling of S in HSV, hue a
  rotation of H in HSV by U(-0.2, 0.2) turns; the four ops run in a random order (one permutation per
  sample, since the reference calls kornia once per sample) and each clamps to [0, 1] in denormalised space.
- Gaussian blur with sigma ~ U(0.15, 1.15) per sample and odd kernels of about 10 % of the image height /
  width (:func:`blur_kernel_size`), separable convolution with reflect padding (kornia ``GaussianBlur2d``).

All randomness goes through an explicit CPU ``torch.Generator`` (draw on CPU, then move to the device).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# ImageNet normalisation (RGB, 0..255 scale), daformer_mic.md §5: one definition, the data pipeline's.
from src.data.transforms import MEAN, STD


def _stats(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return m, s


def denormalize(x: Tensor, *, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> Tensor:
    """Normalised (B,3,H,W) image -> RGB in [0, 1] scale (``(x * std + mean) / 255``, not clamped)."""
    m, s = _stats(x, mean, std)
    return (x * s + m) / 255.0


def normalize(x: Tensor, *, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> Tensor:
    """RGB (B,3,H,W) in [0, 1] scale -> normalised image (inverse of :func:`denormalize`)."""
    m, s = _stats(x, mean, std)
    return (x * 255.0 - m) / s


def blur_kernel_size(size: int) -> int:
    """DACS odd blur kernel for an image side: floor(ceil(0.1·n) − 0.5 + ceil(0.1·n) mod 2).

    51 for n = 512, 103 for n = 1024 (daformer_mic.md §1.3).
    """
    c = math.ceil(0.1 * size)
    return int(math.floor(c - 0.5 + c % 2))


# --------------------------------------------------------------------------------------------- colour ops
def rgb_to_hsv(rgb: Tensor, eps: float = 1e-8) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> HSV with H in turns [0, 1), S and V in [0, 1]."""
    r, g, b = rgb.unbind(-3)
    maxc, argmax = rgb.max(dim=-3)
    minc = rgb.min(dim=-3).values
    delta = maxc - minc
    s = torch.where(maxc > eps, delta / maxc.clamp_min(eps), torch.zeros_like(maxc))
    d = torch.where(delta > eps, delta, torch.ones_like(delta))
    h = torch.where(argmax == 0, (g - b) / d, torch.where(argmax == 1, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h = torch.where(delta > eps, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv` (H in turns)."""
    h, s, v = hsv.unbind(-3)
    h6 = torch.remainder(h, 1.0) * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    # sector:  0        1        2        3        4        5
    r = torch.stack((v, q, p, p, t, v), dim=-3)
    g = torch.stack((t, v, v, q, p, p), dim=-3)
    b = torch.stack((p, p, t, v, v, q), dim=-3)
    idx = i.unsqueeze(-3)
    return torch.cat((r.gather(-3, idx), g.gather(-3, idx), b.gather(-3, idx)), dim=-3)


def adjust_brightness(x: Tensor, shift: float | Tensor) -> Tensor:
    """kornia 0.5: additive shift, clamped to [0, 1]."""
    return (x + shift).clamp(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: float | Tensor) -> Tensor:
    """kornia 0.5: plain multiplication (no mean blending), clamped to [0, 1]."""
    return (x * factor).clamp(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: float | Tensor) -> Tensor:
    """kornia 0.5: S ← clamp(S·factor, 0, 1) in HSV."""
    h, s, v = rgb_to_hsv(x).unbind(-3)
    return hsv_to_rgb(torch.stack((h, (s * factor).clamp(0.0, 1.0), v), dim=-3)).clamp(0.0, 1.0)


def adjust_hue(x: Tensor, shift: float | Tensor) -> Tensor:
    """kornia 0.5: H ← (H + shift) mod 1 turn in HSV (kornia uses radians, shift·2π)."""
    h, s, v = rgb_to_hsv(x).unbind(-3)
    return hsv_to_rgb(torch.stack((torch.remainder(h + shift, 1.0), s, v), dim=-3)).clamp(0.0, 1.0)


def gaussian_kernel1d(size: int, sigma: Tensor) -> Tensor:
    """(N,) sigmas -> (N, size) normalised Gaussian kernels centred at size // 2."""
    xs = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - size // 2
    k = torch.exp(-(xs[None, :] ** 2) / (2.0 * sigma[:, None] ** 2))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: tuple[int, int]) -> Tensor:
    """Per-sample separable Gaussian blur with reflect padding (kornia ``GaussianBlur2d``).

    x: (B,C,H,W); sigma: (B,) on x's device; kernel_size: (ky, kx), both odd.
    """
    b, c, h, w = x.shape
    ky, kx = kernel_size
    sig = sigma.to(device=x.device, dtype=torch.float32).repeat_interleave(c)  # (B*C,)
    y = x.float().reshape(1, b * c, h, w)
    ker_y = gaussian_kernel1d(ky, sig).to(y.dtype).view(b * c, 1, ky, 1)
    ker_x = gaussian_kernel1d(kx, sig).to(y.dtype).view(b * c, 1, 1, kx)
    y = F.conv2d(F.pad(y, (0, 0, ky // 2, ky // 2), mode="reflect"), ker_y, groups=b * c)
    y = F.conv2d(F.pad(y, (kx // 2, kx // 2, 0, 0), mode="reflect"), ker_x, groups=b * c)
    return y.reshape(b, c, h, w).to(x.dtype)


# --------------------------------------------------------------------------------------------- strategy
class StrongAugment:
    """DACS strong augmentation (colour jitter p=0.8, blur p=0.5) on normalised images.

    DACS / DAFormer, daformer_mic.md §1.2 step 2 and §1.3. ``draw`` makes the per-step decisions (one
    call per training step, shared by the batch); ``__call__`` applies them with per-sample factors.
    Labels and weights are never passed here (only images are colour-transformed).
    """

    def __init__(
        self,
        *,
        color_jitter_strength: float = 0.2,
        color_jitter_p: float = 0.2,
        blur: bool = True,
        blur_p: float = 0.5,
        sigma: tuple[float, float] = (0.15, 1.15),
        mean: Sequence[float] = MEAN,
        std: Sequence[float] = STD,
    ) -> None:
        if color_jitter_strength < 0:
            raise ValueError(f"color_jitter_strength must be >= 0, got {color_jitter_strength}")
        self.color_jitter_strength = float(color_jitter_strength)
        self.color_jitter_p = float(color_jitter_p)
        self.blur = bool(blur)
        self.blur_p = float(blur_p)
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.mean = tuple(mean)
        self.std = tuple(std)

    def draw(self, generator: torch.Generator) -> dict[str, bool]:
        """Per-step decisions: ``{"color_jitter": U > p_jitter, "blur": blur and U > blur_p}``.

        Both uniforms are always drawn so the generator advances identically whatever the flags.
        """
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        return {"color_jitter": u[0] > self.color_jitter_p, "blur": self.blur and u[1] > self.blur_p}

    def color_jitter(self, x01: Tensor, generator: torch.Generator) -> Tensor:
        """kornia-0.5 colour jitter on (B,3,H,W) RGB in [0, 1], factors and op order drawn per sample."""
        s = self.color_jitter_strength
        b = x01.shape[0]
        lo = max(0.0, 1.0 - s)
        hs = min(s, 0.5)
        u = torch.rand(b, 4, generator=generator, dtype=torch.float64)
        bri = lo + (1.0 + s - lo) * u[:, 0]
        con = lo + (1.0 + s - lo) * u[:, 1]
        sat = lo + (1.0 + s - lo) * u[:, 2]
        hue = -hs + 2.0 * hs * u[:, 3]
        out = []
        for i in range(b):
            img = x01[i : i + 1]
            order = torch.randperm(4, generator=generator).tolist()
            for op in order:
                if op == 0:
                    img = adjust_brightness(img, float(bri[i]) - 1.0)
                elif op == 1:
                    img = adjust_contrast(img, float(con[i]))
                elif op == 2:
                    img = adjust_saturation(img, float(sat[i]))
                else:
                    img = adjust_hue(img, float(hue[i]))
            out.append(img)
        return torch.cat(out, dim=0)

    def gaussian_blur(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Blur (B,C,H,W) with sigma ~ U(sigma) per sample and the DACS kernel sizes."""
        b, _, h, w = x.shape
        lo, hi = self.sigma
        sigma = lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float64)
        return gaussian_blur(x, sigma.float().to(x.device), (blur_kernel_size(h), blur_kernel_size(w)))

    def __call__(self, x: Tensor, params: dict[str, bool], generator: torch.Generator) -> Tensor:
        """Apply the drawn decisions to normalised images (B,3,H,W); returns normalised images."""
        if params.get("color_jitter", False):
            x01 = denormalize(x.float(), mean=self.mean, std=self.std).clamp(0.0, 1.0)
            x = normalize(self.color_jitter(x01, generator), mean=self.mean, std=self.std).to(x.dtype)
        if params.get("blur", False):
            x = self.gaussian_blur(x, generator)
        return x

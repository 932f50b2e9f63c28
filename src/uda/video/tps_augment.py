"""TPS's strong view of the current target pair (video_uda.md §3.3 step 3), torchvision semantics.

The reference (``tps/domain_adaptation/train_video_UDA.py::train_TPS``) builds, every iteration,

    Compose([ToPILImage(), RandomApply([GaussianBlur(radius=choice(radii))], p=0.6),
             RandomApply([ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), RandomGrayscale(p=0.2), ToTensor()])

and applies it once to frames d and c concatenated vertically, so both frames get the same draws. It is far
stronger than the DACS augmentation (src/uda/augment.py: jitter 0.2, blur sigma 0.15-1.15) that the library
uses by default for the TPS view. Re-implemented on tensors:

- **Blur** with probability ``blur_p``: PIL ``ImageFilter.GaussianBlur(radius)`` is a Gaussian of standard
  deviation ``radius``; the radius is drawn from ``blur_radii`` (video_uda.md §3.3: {5, 7, 9}; a later
  commit of the TPS file draws from {7, 9, 11}), in pixels of the reference's 512-row frames, scaled to the
  frame's height (``reference_height``; null = the radii as given). Kernel ±3σ, reflect padding.
- **Colour jitter** with probability ``jitter_p``, torchvision's ``ColorJitter`` on PIL images: brightness
  ``x·f``, contrast ``f·x + (1 − f)·mean(gray(x))``, saturation ``f·x + (1 − f)·gray(x)``, hue a shift of H
  by U(−hue, hue) turns; f ~ U[max(0, 1 − s), 1 + s]; the four in a random order; each clamps to [0, 1].
- **Grayscale** with probability ``grayscale_p``: ITU-R 601 luma (PIL ``convert('L')``) on all channels.

Every decision and factor is drawn **per sample** inside :meth:`__call__` from the step's generator (the
reference's batch is one clip). :meth:`pair` augments the current pair as the reference does: the two frames
concatenated vertically into one image, so both get the same draws, the contrast mean is the pair's, and the
blur reaches across the seam (the blur radius is scaled to one frame's height).
The reference's ToPILImage wrap-around of the normalised tensor is a separate switch
(``uda.pseudo.pil_wraparound``, src/uda/video/tps.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from src.data.transforms import MEAN, STD
from src.uda.augment import adjust_hue, denormalize, gaussian_blur, normalize

#: PIL ``convert('L')`` weights (ITU-R 601-2 luma)
LUMA = (0.299, 0.587, 0.114)


def grayscale(x01: Tensor) -> Tensor:
    """(B,3,H,W) RGB in [0, 1] -> (B,1,H,W) luma."""
    w = torch.as_tensor(LUMA, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 * w).sum(dim=1, keepdim=True)


class TPSStrongAugment:
    """TPS's strong view (blur p 0.6, ColorJitter(0.8, 0.8, 0.8, 0.2) p 0.8, grayscale p 0.2)."""

    def __init__(
        self,
        *,
        blur_p: float = 0.6,
        blur_radii: Sequence[float] = (5.0, 7.0, 9.0),
        reference_height: int | None = 512,
        jitter_p: float = 0.8,
        brightness: float = 0.8,
        contrast: float = 0.8,
        saturation: float = 0.8,
        hue: float = 0.2,
        grayscale_p: float = 0.2,
        mean: Sequence[float] = MEAN,
        std: Sequence[float] = STD,
    ) -> None:
        for name, p in (("blur_p", blur_p), ("jitter_p", jitter_p), ("grayscale_p", grayscale_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"TPSStrongAugment: {name} must be a probability in [0, 1], got {p}")
        if not blur_radii or min(blur_radii) <= 0:
            raise ValueError(
                f"TPSStrongAugment: blur_radii must be positive radii in px, got {list(blur_radii)}"
            )
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"TPSStrongAugment: hue must be in [0, 0.5] turns (torchvision's), got {hue}")
        if min(brightness, contrast, saturation) < 0:
            raise ValueError("TPSStrongAugment: brightness, contrast and saturation must be >= 0")
        self.blur_p, self.jitter_p, self.grayscale_p = float(blur_p), float(jitter_p), float(grayscale_p)
        self.blur_radii = tuple(float(r) for r in blur_radii)
        self.reference_height = reference_height
        self.brightness, self.contrast, self.saturation, self.hue = (
            float(brightness),
            float(contrast),
            float(saturation),
            float(hue),
        )
        self.mean, self.std = tuple(mean), tuple(std)

    def draw(self, generator: torch.Generator) -> dict[str, bool]:
        """The step's shared decisions: none (every draw is per sample, in :meth:`__call__`)."""
        return {}

    @staticmethod
    def _factor(s: float, u: float) -> float:
        lo = max(0.0, 1.0 - s)
        return lo + (1.0 + s - lo) * u

    def jitter_one(self, img: Tensor, u: list[float], order: list[int]) -> Tensor:
        """torchvision ColorJitter on one (1,3,H,W) RGB image in [0, 1] with uniforms u (4) and op order."""
        for op in order:
            if op == 0:
                img = (img * self._factor(self.brightness, u[0])).clamp(0.0, 1.0)
            elif op == 1:
                f = self._factor(self.contrast, u[1])
                img = (f * img + (1.0 - f) * grayscale(img).mean()).clamp(0.0, 1.0)
            elif op == 2:
                f = self._factor(self.saturation, u[2])
                img = (f * img + (1.0 - f) * grayscale(img)).clamp(0.0, 1.0)
            else:  # the same rotation of H in turns as torchvision's adjust_hue
                img = adjust_hue(img, -self.hue + 2.0 * self.hue * u[3])
        return img

    def pair(
        self, x: Tensor, x_prev: Tensor, params: dict[str, bool], generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """The current pair (d, c) as the reference augments it: concatenated vertically (d on top) into one
        image per sample, augmented once, split back at the frame's height (video_uda.md §3.3 step 3)."""
        if x.shape != x_prev.shape:
            raise ValueError(
                f"TPSStrongAugment.pair: frames of different shapes {tuple(x.shape)}, {tuple(x_prev.shape)}"
            )
        h = x.shape[-2]
        both = self(torch.cat([x, x_prev], dim=-2), params, generator, frame_height=h)
        return both[..., :h, :], both[..., h:, :]

    def __call__(
        self,
        x: Tensor,
        params: dict[str, bool],
        generator: torch.Generator,
        *,
        frame_height: int | None = None,
    ) -> Tensor:
        """Normalised (B,3,H,W) -> the strong view, normalised; draws from ``generator`` per sample.
        ``frame_height``: the height the blur radius is scaled by (one frame of a pair; default H)."""
        b, _, h, _ = x.shape
        frame_h = h if frame_height is None else frame_height
        scale = 1.0 if self.reference_height is None else frame_h / float(self.reference_height)
        x01 = denormalize(x.float(), mean=self.mean, std=self.std).clamp(0.0, 1.0)
        out = []
        for i in range(b):
            # the same draws in the same order whatever is applied, so the generator advances identically
            u = torch.rand(7, generator=generator, dtype=torch.float64).tolist()
            order = torch.randperm(4, generator=generator).tolist()
            img = x01[i : i + 1]
            if u[0] < self.blur_p:
                n_radii = len(self.blur_radii)
                sigma = self.blur_radii[min(int(u[1] * n_radii), n_radii - 1)] * scale
                k = 2 * math.ceil(3.0 * sigma) + 1
                ky, kx = (min(k, 2 * ((n - 1) // 2) + 1) for n in img.shape[-2:])  # reflect pad < side
                img = gaussian_blur(img, torch.tensor([sigma], dtype=torch.float32), (ky, kx))
            if u[2] < self.jitter_p:
                img = self.jitter_one(img, u[3:7], order)
            if torch.rand((), generator=generator, dtype=torch.float64).item() < self.grayscale_p:
                img = grayscale(img).expand(-1, 3, -1, -1)
            out.append(img)
        return normalize(torch.cat(out), mean=self.mean, std=self.std).to(x.dtype)

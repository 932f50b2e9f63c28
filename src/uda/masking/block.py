"""MIC random block masking of the target images.

Source: MIC ``masking_transforms.py`` (``BlockMaskGenerator``), daformer_mic.md §2.

- U(0,1) on a grid (B, 1, round(H/b), round(W/b)); a block is **kept** where the value is > ``ratio``, so
  ~70 % of the blocks are dropped at ratio 0.7. Nearest upsampling to H×W; one mask per image, shared by
  the channels.
- The normalised image is multiplied by the mask: dropped pixels are 0 in normalised space, i.e. the
  ImageNet mean colour.
- Block size b = 32 for MIC(DAFormer) (512 crops, the default here) and 64 for MIC(HRDA) (1024 crops).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class BlockMasker:
    """MIC block mask (daformer_mic.md §2): drop ``ratio`` of the b×b blocks of each image."""

    def __init__(self, *, ratio: float = 0.7, block_size: int = 32) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.ratio = float(ratio)
        self.block_size = int(block_size)

    def mask(
        self,
        shape: torch.Size | tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str | None = None,
        *,
        pseudo_label: Tensor | None = None,
        confidence: Tensor | None = None,
    ) -> Tensor:
        """(B,1,H,W) float mask, 1 = kept, 0 = masked, for images of ``shape`` (B,C,H,W).

        ``pseudo_label`` / ``confidence`` are accepted and ignored (the masker interface shared with OMUDA's
        context-aware masker, ``src.uda.masking.cam``).
        """
        b, _, h, w = shape
        grid = (b, 1, max(1, round(h / self.block_size)), max(1, round(w / self.block_size)))
        keep = (torch.rand(grid, generator=generator) > self.ratio).float().to(device)
        return F.interpolate(keep, size=(h, w), mode="nearest")

    def __call__(
        self,
        x: Tensor,
        generator: torch.Generator,
        *,
        pseudo_label: Tensor | None = None,
        confidence: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns (masked images x·M, mask M (B,1,H,W))."""
        m = self.mask(x.shape, generator, x.device).to(x.dtype)
        return x * m, m

"""MIC block masking: ratio, block alignment, zeroed pixels (daformer_mic.md §2)."""

from __future__ import annotations

import torch

from src.uda.augment import MEAN, denormalize
from src.uda.masking.block import BlockMasker


def test_mask_ratio_over_many_draws() -> None:
    masker = BlockMasker(ratio=0.7, block_size=8)
    g = torch.Generator().manual_seed(0)
    kept = torch.stack([masker.mask((4, 3, 64, 64), g, "cpu") for _ in range(100)])
    assert abs(kept.mean().item() - 0.3) < 0.015  # ~70 % of the blocks dropped (25,600 blocks)


def test_block_alignment_and_shape() -> None:
    masker = BlockMasker(block_size=16)
    m = masker.mask((2, 3, 64, 64), torch.Generator().manual_seed(1), "cpu")
    assert m.shape == (2, 1, 64, 64) and set(m.unique().tolist()) <= {0.0, 1.0}
    blocks = m.view(2, 1, 4, 16, 4, 16)
    assert torch.equal(blocks.amax(dim=(3, 5)), blocks.amin(dim=(3, 5)))  # constant per 16x16 block
    assert 0 < m.sum() < m.numel()


def test_masked_pixels_exactly_zero_and_mean_colour() -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    xm, m = BlockMasker()(x, torch.Generator().manual_seed(3))
    assert m.shape == (2, 1, 64, 64)
    keep = m.expand_as(x).bool()
    assert (xm[~keep] == 0).all() and torch.equal(xm[keep], x[keep])
    assert keep[:, 0].eq(keep[:, 1]).all()  # shared across channels
    dropped = denormalize(xm).permute(1, 0, 2, 3)[:, ~m[:, 0].bool()]  # (3, n_dropped)
    torch.testing.assert_close(dropped * 255, torch.tensor(MEAN)[:, None].expand_as(dropped))  # mean colour


def test_deterministic_and_independent_per_image() -> None:
    masker = BlockMasker(block_size=8)
    a = masker.mask((2, 3, 64, 64), torch.Generator().manual_seed(4), "cpu")
    b = masker.mask((2, 3, 64, 64), torch.Generator().manual_seed(4), "cpu")
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])

"""MIC's mask_mode (daformer_mic.md §2; MIC masking_consistency_module.py): which images the masked batch
holds and whether they are colour-augmented; the 'separate' mode of Cityscapes -> ACDC / Dark Zurich trains
one source image on its ground truth (weight 1) and one target image on its pseudo-label."""

from __future__ import annotations

import pytest
import torch

from src.uda.augment import StrongAugment
from src.uda.masking.block import BlockMasker
from src.uda.masking.mic import MODES, MaskedImageConsistency


def _batch(b=2, h=32, w=32):
    g = torch.Generator().manual_seed(0)
    x_s, x_t = torch.randn(b, 3, h, w, generator=g), torch.randn(b, 3, h, w, generator=g)
    y_s = torch.randint(0, 19, (b, h, w), generator=g)
    y_s[:, 0] = 255
    y_t = torch.randint(0, 19, (b, h, w), generator=g)
    w_t = torch.full((b, h, w), 0.7)
    p_t = torch.rand(b, h, w, generator=g)
    return x_s, y_s, x_t, y_t, w_t, p_t


def _mic(mode, augment=True):
    aug = StrongAugment() if augment else None
    return MaskedImageConsistency(masker=BlockMasker(ratio=0.7, block_size=8), augment=aug, mode=mode)


def test_separate_is_first_source_and_first_target():
    x_s, y_s, x_t, y_t, w_t, p_t = _batch()
    m = _mic("separate").inputs(x_s, y_s, x_t, y_t, w_t, p_t)
    assert torch.equal(m.x, torch.stack([x_s[0], x_t[0]]))
    assert torch.equal(m.y, torch.stack([y_s[0], y_t[0]]))  # ground truth (with its 255s), pseudo-label
    assert torch.equal(m.w[0], torch.ones_like(w_t[0])) and torch.equal(m.w[1], w_t[0])
    assert torch.equal(m.confidence[0], torch.ones_like(p_t[0])) and torch.equal(m.confidence[1], p_t[0])
    assert m.target_rows == slice(1, 2)
    # a batch of one image per domain works too (MIC itself asserts a batch of exactly 2)
    m1 = _mic("separate").inputs(x_s[:1], y_s[:1], x_t[:1], y_t[:1], w_t[:1], p_t[:1])
    assert m1.x.shape[0] == 2
    t = _mic("separatetrgaug").inputs(x_s, y_s, x_t, y_t, w_t, p_t)
    assert t.x is x_t and t.y is y_t and t.w is w_t and t.target_rows == slice(0, 2)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_augmentation_only_in_aug_modes(mode):
    """Without augmentation the masked image is exactly the input times the block mask of the same draw."""
    x = torch.randn(2, 3, 32, 32)
    out, keep = _mic(mode)(x, generator=torch.Generator().manual_seed(3))
    plain = BlockMasker(ratio=0.7, block_size=8)
    ref_keep = plain.mask(x.shape, torch.Generator().manual_seed(3), x.device)
    if mode.endswith("aug"):  # MIC's strong_transform first (its draws come first), then the mask
        g = torch.Generator().manual_seed(3)
        aug = StrongAugment()
        ref, ref_keep = plain(aug(x, aug.draw(g), g), g)
        assert torch.equal(keep, ref_keep) and torch.allclose(out, ref)
    else:
        assert torch.equal(keep, ref_keep) and torch.equal(out, x * ref_keep)


def test_bad_modes_are_one_line_with_the_fix():
    with pytest.raises(ValueError, match=r"uda.mask.mode='sep' is not a MIC mask mode.*separate"):
        _mic("sep")
    with pytest.raises(ValueError, match=r"augment is null.*\(separate\)"):
        _mic("separateaug", augment=False)
    assert _mic("separate", augment=False).mode == "separate"

"""Pseudo-labeler: per-batch quality weight, pixel option, margins (daformer_mic.md §1.2, §1.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.uda.pseudo_label import PseudoLabeler, crop_pseudo_margin_mask


def _probs(conf: torch.Tensor, label: torch.Tensor, c: int = 3) -> torch.Tensor:
    """probs with p_max = conf at class `label`, the rest spread evenly."""
    p = ((1 - conf) / (c - 1)).unsqueeze(1).repeat(1, c, 1, 1)
    return p.scatter(1, label.unsqueeze(1), conf.unsqueeze(1))


def test_batch_weight_is_fraction_over_whole_batch() -> None:
    conf = torch.full((2, 4, 4), 0.5)
    conf[0, 0, :] = 0.99  # 4 confident pixels in sample 0
    conf[0, 1, 0] = 0.968  # exactly the threshold counts (>=)
    conf[1, 3, :3] = 0.97  # 3 in sample 1
    conf[1, 2, 0] = 0.9679  # just below
    label = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    y, w, p_max = PseudoLabeler()(_probs(conf, label))
    assert y.dtype == torch.long and torch.equal(y, label)
    torch.testing.assert_close(p_max, conf)
    assert w.dtype == torch.float32 and w.shape == (2, 4, 4)
    torch.testing.assert_close(w, torch.full((2, 4, 4), 8 / 32))  # one scalar for both samples


def test_pixel_weight() -> None:
    conf = torch.full((2, 4, 4), 0.5)
    conf[0, 0, :2] = 0.99
    conf[1, 3, 3] = 0.97
    _, w, _ = PseudoLabeler(weight_mode="pixel")(_probs(conf, torch.zeros(2, 4, 4, dtype=torch.long)))
    assert torch.equal(w, (conf >= 0.968).float())
    assert w.sum() == 3


def test_top_bottom_margins_and_valid_mask() -> None:
    conf = torch.full((2, 8, 4), 0.99)
    probs = _probs(conf, torch.zeros(2, 8, 4, dtype=torch.long))
    _, w, _ = PseudoLabeler(ignore_top=2, ignore_bottom=3)(probs)
    expected = torch.ones(2, 8, 4)
    expected[:, :2] = 0
    expected[:, 5:] = 0
    assert torch.equal(w, expected)  # q computed before the margins: 1.0
    valid = torch.ones(2, 8, 4, dtype=torch.uint8)
    valid[1, :, 0] = 0
    _, w2, _ = PseudoLabeler(ignore_top=2, ignore_bottom=3)(probs, valid)
    expected[1, :, 0] = 0
    assert torch.equal(w2, expected)
    with pytest.raises(ValueError):
        PseudoLabeler()(probs, torch.ones(2, 4, 4))


def test_crop_pseudo_margin_mask() -> None:
    m = crop_pseudo_margin_mask(6, 7, margins=(1, 2, 1, 3))
    expected = np.zeros((6, 7), np.uint8)
    expected[1:4, 1:4] = 1
    assert m.dtype == np.uint8 and np.array_equal(m, expected)
    full = crop_pseudo_margin_mask(1024, 2048)  # HRDA/MIC defaults 30/240/30/30
    assert full.shape == (1024, 2048) and int(full.sum()) == (1024 - 270) * (2048 - 60)
    assert full[29].sum() == 0 and full[30, 30] == 1 and full[1024 - 241, 2048 - 31] == 1
    assert full[1024 - 240].sum() == 0 and full[:, 2048 - 30].sum() == 0

"""OMUDA CAM: MIC equivalence, ratio preservation, adaptive ratios, sub-blocks (reference/omuda.md §4.1)."""

from __future__ import annotations

import pytest
import torch

from src.uda.masking.block import BlockMasker
from src.uda.masking.cam import ContextAwareMasker, adaptive_ratios

CAR, ROAD = 13, 0


def _label_with_fg_cells(b: int, gh: int, gw: int, bs: int, n_fg: int) -> torch.Tensor:
    """(b, gh*bs, gw*bs) road label whose first ``n_fg`` cells (row-major) are entirely car."""
    y = torch.full((b, gh * bs, gw * bs), ROAD, dtype=torch.long)
    for i in range(n_fg):
        r, c = divmod(i, gw)
        y[:, r * bs : (r + 1) * bs, c * bs : (c + 1) * bs] = CAR
    return y


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (3, 3, 40, 72)])
def test_beta_one_without_granularity_is_block_masker(shape) -> None:
    y = torch.randint(0, 19, (shape[0], shape[2], shape[3]), generator=torch.Generator().manual_seed(0))
    conf = torch.ones(shape[0], shape[2], shape[3])
    cam = ContextAwareMasker(ratio=0.7, block_size=8, beta=1.0, granularity=False)
    mic = BlockMasker(ratio=0.7, block_size=8)
    for seed in range(5):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a = cam.mask(shape, g1, "cpu", pseudo_label=y, confidence=conf)
        b = mic.mask(shape, g2, "cpu")
        assert torch.equal(a, b)
        assert torch.equal(g1.get_state(), g2.get_state())  # same numbers consumed
    assert cam.last_rho.gt(0).all()  # foreground existed, yet beta = 1 changes nothing


def test_no_pseudo_label_behaves_as_block_masking() -> None:
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    cam = ContextAwareMasker(block_size=8)  # beta 0.5, granularity on
    xa, ma = cam(x, torch.Generator().manual_seed(7))
    xb, mb = BlockMasker(block_size=8)(x, torch.Generator().manual_seed(7))
    assert torch.equal(ma, mb) and torch.equal(xa, xb)
    assert cam.last_rho.tolist() == [0.0, 0.0]
    # the unified masker interface: BlockMasker accepts and ignores the context
    xc, mc = BlockMasker(block_size=8)(
        x, torch.Generator().manual_seed(7), pseudo_label=None, confidence=None
    )
    assert torch.equal(mc, mb)


def test_adaptive_ratio_formulas_and_clipping() -> None:
    rho = torch.tensor([0.0, 0.3, 0.7, 1.0])
    r_fg, r_bg = adaptive_ratios(0.7, rho, 0.5, rebalance=False)
    # r_bg = 0.7 / (0.5 rho + 1 - rho), r_fg = 0.5 r_bg, both clipped to [0, 0.95]
    exp_bg = torch.tensor([0.7, 0.7 / 0.85, 0.95, 0.95])  # 1.0769 and 1.4 clipped
    exp_fg = torch.tensor([0.35, 0.35 / 0.85, 0.7 / 0.65 * 0.5, 0.7])
    torch.testing.assert_close(r_bg, exp_bg)
    torch.testing.assert_close(r_fg, exp_fg)
    total = rho * r_fg + (1 - rho) * r_bg
    torch.testing.assert_close(total[:2], torch.tensor([0.7, 0.7]))  # preserved where no clip binds
    assert abs(total[2].item() - (0.7 * 0.7 / 1.3 + 0.3 * 0.95)) < 1e-6  # 0.6619 < 0.7: the design's loss
    # rebalance (default): the unclipped ratio is re-solved from the total
    r_fg, r_bg = adaptive_ratios(0.7, rho, 0.5)
    torch.testing.assert_close(r_bg, exp_bg)
    torch.testing.assert_close(r_fg[:2], exp_fg[:2])
    torch.testing.assert_close(r_fg[2], torch.tensor((0.7 - 0.3 * 0.95) / 0.7))
    torch.testing.assert_close(rho * r_fg + (1 - rho) * r_bg, torch.full((4,), 0.7))
    # beta > 1: foreground masked more, r_fg clipped, background re-solved
    r_fg, r_bg = adaptive_ratios(0.7, torch.tensor([0.25]), 2.0)  # r_bg = 0.56, r_fg = 1.12 -> 0.95
    torch.testing.assert_close(r_fg, torch.tensor([0.95]))
    torch.testing.assert_close(r_bg, torch.tensor([(0.7 - 0.25 * 0.95) / 0.75]))


@pytest.mark.parametrize("granularity", [False, True])
@pytest.mark.parametrize("n_fg", [0, 6, 14])  # rho = 0, 0.3, 0.7 of a 4x5 grid
def test_expected_total_ratio_is_preserved(granularity, n_fg) -> None:
    bs = 8
    y = _label_with_fg_cells(4, 4, 5, bs, n_fg)
    cam = ContextAwareMasker(ratio=0.7, block_size=bs, beta=0.5, granularity=granularity)
    g = torch.Generator().manual_seed(n_fg)
    masked = []
    for _ in range(300):
        m = cam.mask((4, 3, 32, 40), g, "cpu", pseudo_label=y, confidence=torch.ones(4, 32, 40))
        masked.append(1 - m.mean())
    torch.testing.assert_close(cam.last_rho, torch.full((4,), n_fg / 20))
    assert abs(torch.stack(masked).mean().item() - 0.7) < 0.01  # 24,000 cells: s.d. ~0.003


def test_foreground_cells_masked_less_at_half_beta() -> None:
    bs = 8
    y = _label_with_fg_cells(4, 4, 5, bs, 6)  # rho = 0.3 -> r_bg = 0.8235, r_fg = 0.4118
    fg_pix = (y == CAR).unsqueeze(1)
    cam = ContextAwareMasker(ratio=0.7, block_size=bs, beta=0.5, granularity=False)
    g = torch.Generator().manual_seed(0)
    ms = torch.cat([cam.mask((4, 3, 32, 40), g, "cpu", pseudo_label=y) for _ in range(200)])
    fgm = fg_pix.repeat(200, 1, 1, 1)
    fg_rate = 1 - ms[fgm].mean().item()
    bg_rate = 1 - ms[~fgm].mean().item()
    assert abs(fg_rate - 0.35 / 0.85) < 0.02 and abs(bg_rate - 0.7 / 0.85) < 0.02
    assert fg_rate < bg_rate


def test_foreground_rules_threshold_and_confidence_gate() -> None:
    cam = ContextAwareMasker(block_size=8, fg_threshold=0.1, confidence_threshold=0.968)
    y = torch.zeros(1, 8, 16, dtype=torch.long)
    y[0, :2, :3] = CAR  # 6 / 64 = 0.094 < 0.1: background
    y[0, :2, 8:12] = 11  # 8 / 64 = 0.125 >= 0.1: foreground (person)
    conf = torch.ones(1, 8, 16)
    assert cam.foreground_cells(y, conf, (1, 2)).tolist() == [[[False, True]]]
    y[0, 5, :1] = 5  # pole is not a thing class
    conf[0, :2, 8:10] = 0.9  # 4 unconfident person pixels: 4 / 64 < 0.1 -> background
    assert cam.foreground_cells(y, conf, (1, 2)).tolist() == [[[False, False]]]
    cam_nogate = ContextAwareMasker(block_size=8, confidence_threshold=None)
    assert cam_nogate.foreground_cells(y, conf, (1, 2)).tolist() == [[[False, True]]]


def test_sub_block_granularity() -> None:
    bs = 8
    y = _label_with_fg_cells(2, 4, 4, bs, 8)  # top two cell rows foreground, rho = 0.5
    cam = ContextAwareMasker(ratio=0.7, block_size=bs, beta=0.5, granularity=True)
    assert cam.sub_block_size == 4
    g = torch.Generator().manual_seed(3)
    varies = 0
    for _ in range(20):
        m = cam.mask((2, 3, 32, 32), g, "cpu", pseudo_label=y)[:, 0]
        sub = m.view(2, 8, 4, 8, 4)  # 4x4 sub-blocks
        assert torch.equal(sub.amax(dim=(2, 4)), sub.amin(dim=(2, 4)))  # constant inside each sub-block
        bg = m[:, 16:].reshape(2, 2, 8, 4, 8)  # background rows: constant inside each 8x8 cell
        assert torch.equal(bg.amax(dim=(2, 4)), bg.amin(dim=(2, 4)))
        fg = m[:, :16].reshape(2, 2, 8, 4, 8)
        varies += int((fg.amax(dim=(2, 4)) != fg.amin(dim=(2, 4))).sum())
    assert varies > 0  # foreground cells are partially visible
    # the foreground sub-blocks follow the second draw, the background cells the first (MIC's)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    m = cam.mask((2, 3, 32, 32), g1, "cpu", pseudo_label=y)[:, 0]
    u_cell = torch.rand((2, 1, 4, 4), generator=g2)
    u_sub = torch.rand((2, 1, 8, 8), generator=g2)
    r_fg, r_bg = cam.last_r_fg[0].item(), cam.last_r_bg[0].item()
    assert torch.equal(m[:, 16::8, ::8], (u_cell[:, 0, 2:] > r_bg).float())
    assert torch.equal(m[:, :16:4, ::4], (u_sub[:, 0, :4] > r_fg).float())


def test_call_masks_image_and_validates() -> None:
    x = torch.randn(1, 3, 16, 16)
    y = _label_with_fg_cells(1, 2, 2, 8, 1)
    xm, m = ContextAwareMasker(block_size=8)(x, torch.Generator().manual_seed(0), pseudo_label=y)
    assert m.shape == (1, 1, 16, 16) and torch.equal(xm, x * m)
    with pytest.raises(ValueError):
        ContextAwareMasker(block_size=8, sub_block_size=3)
    with pytest.raises(ValueError):
        ContextAwareMasker(block_size=8).mask((1, 3, 16, 16), torch.Generator(), pseudo_label=y[:, :8])

"""OMUDA FDM: FD equivalence, target cells (CDM gate, masked background), MGD variant (omuda.md §4.2)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from src.uda.fdm import FeatureDistillationMasking
from src.uda.feature_distance import ImageNetFeatureDistance


class ConvEncoder(nn.Module):
    """A tiny image-dependent 'pre-trained' encoder: two stages, the last at stride 4 with 4 channels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.s1 = nn.Conv2d(3, 3, 1)
        self.s2 = nn.Conv2d(3, 4, 4, stride=4)
        self.out_channels = [3, 4]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.s1(x)
        return [a, self.s2(a)]


class FixedEncoder(nn.Module):
    """Returns a fixed last-stage feature map whatever the image."""

    def __init__(self, feat: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("feat", feat)
        self.out_channels = [feat.shape[1]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.feat.expand(x.shape[0], -1, -1, -1)]


def _label(b: int = 2) -> torch.Tensor:
    """(b, 8, 12), 2x3 cells of 4x4 px: (0,0) car, (1,2) person, (0,1) car 11/16 (< 0.75), rest road."""
    y = torch.zeros(b, 8, 12, dtype=torch.long)
    y[:, :4, :4] = 13
    y[:, 4:, 8:] = 11
    c = torch.full((16,), 13)
    c[:5] = 0
    y[:, :4, 4:8] = c.view(4, 4)
    return y


def test_forward_equals_daformer_fd_and_target_reduction() -> None:
    enc = ConvEncoder()
    fd = ImageNetFeatureDistance(encoder=copy.deepcopy(enc))
    fdm = FeatureDistillationMasking(encoder=copy.deepcopy(enc), background_weight=0.1)
    assert fdm.weight == 0.005 and fdm.classes == fd.classes and fdm.min_ratio == 0.75
    x = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(1))
    y = _label()
    feats = [torch.zeros(1), torch.randn(2, 4, 2, 3, generator=torch.Generator().manual_seed(2))]
    ref = fd(feats, x, y)
    assert ref > 0
    assert torch.equal(fdm(feats, x, y), ref)
    # no masking, every pixel trusted, the same image: the target term is the source FD on the same labels
    ones_w, ones_m = torch.ones(2, 8, 12), torch.ones(2, 1, 8, 12)
    torch.testing.assert_close(fdm.target_loss(feats, x, y, ones_w, ones_m), ref, rtol=0, atol=1e-9)
    torch.testing.assert_close(fdm.target_loss(feats, x, y), ref, rtol=0, atol=1e-9)


def _student() -> torch.Tensor:
    """(1, 2, 2, 3) student features; the fixed encoder is 0, so the distance of a cell is its norm."""
    s = torch.zeros(1, 2, 2, 3)
    s[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # 5, car cell
    s[0, :, 0, 1] = torch.tensor([6.0, 8.0])  # 10, mixed cell (car 11/16): neither thing nor background
    s[0, :, 0, 2] = torch.tensor([0.0, 2.0])  # 2, road
    s[0, :, 1, 0] = torch.tensor([0.0, 4.0])  # 4, road
    s[0, :, 1, 1] = torch.tensor([0.0, 7.0])  # 7, road
    s[0, :, 1, 2] = torch.tensor([0.0, 1.0])  # 1, person cell
    return s


def test_cdm_gate_and_masked_background_cells() -> None:
    fdm = FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)), background_weight=0.1)
    s = _student().requires_grad_(True)
    x, y = torch.zeros(1, 3, 8, 12), _label(1)
    mask = torch.ones(1, 1, 8, 12)
    mask[..., :4, 4:12] = 0  # cells (0,1), (0,2) fully masked
    mask[..., 4:8, 0:2] = 0  # cell (1,0): half masked -> counts (>= 0.5)
    mask[..., 4:5, 4:8] = 0  # cell (1,1): a quarter masked -> does not count
    mask[..., 4:8, 8:12] = 0  # person cell (1,2) masked: a thing cell, weight 1 (not background)
    w = torch.ones(1, 8, 12)
    thing, bg = fdm.target_cells(y, w, mask, s.shape)
    assert thing.tolist() == [[[True, False, False], [False, False, True]]]
    assert bg.tolist() == [[[False, False, True], [True, False, False]]]
    loss = fdm.target_loss([s], x, y, w, mask)
    torch.testing.assert_close(loss, torch.tensor(0.005 * (5 + 1 + 0.1 * (2 + 4)) / (2 + 0.2)))
    # CDM gate: a thing cell passes when the mean pseudo-label weight over its pixels is >= 0.5
    w[0, :2, :4] = 0.0  # car cell: 8 of 16 zero, mean 0.5 passes (>=)
    w[0, 4:6, 8:12] = 0.0  # person cell: 8 of 16 zero, passes
    thing, _ = fdm.target_cells(y, w, mask, s.shape)
    assert thing.tolist() == [[[True, False, False], [False, False, True]]]
    w[0, 6, 8] = 0.0  # 7/16 kept: fails
    thing, _ = fdm.target_cells(y, w, mask, s.shape)
    assert thing.tolist() == [[[True, False, False], [False, False, False]]]
    loss = fdm.target_loss([s], x, y, w, mask)
    torch.testing.assert_close(loss, torch.tensor(0.005 * (5 + 0.1 * (2 + 4)) / (1 + 0.2)))
    # DACS's scalar weight: every cell passes iff q >= 0.5
    thing, _ = fdm.target_cells(y, torch.full((1, 8, 12), 0.4), mask, s.shape)
    assert not thing.any()
    # background_weight 0 (default): the background cells do not count even where masked
    fdm0 = FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)))
    torch.testing.assert_close(fdm0.target_loss([s], x, y, None, mask), torch.tensor(0.005 * (5 + 1) / 2))
    # without a mask no background cell exists
    _, bg = fdm.target_cells(y, None, None, s.shape)
    assert not bg.any()


def test_empty_cell_set_is_connected_zero() -> None:
    fdm = FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)))
    s = _student().requires_grad_(True)
    y = torch.zeros(1, 8, 12, dtype=torch.long)  # road only, no masking
    loss = fdm.target_loss([s], torch.zeros(1, 3, 8, 12), y, torch.ones(1, 8, 12), torch.ones(1, 1, 8, 12))
    assert loss.item() == 0.0 and loss.requires_grad and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_mgd_variant_value_shapes_and_generator_gradient() -> None:
    e0 = torch.randn(1, 4, 2, 3, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    fdm = FeatureDistillationMasking(encoder=FixedEncoder(e0), mode="mgd")
    assert fdm.mgd_drop == 0.75 and fdm.mgd_alpha == 2e-5 and fdm.align is None
    convs = [m for m in fdm.generator if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(4, 4, (3, 3))] * 2
    assert isinstance(fdm.generator[1], nn.ReLU)
    trainable = {n.split(".")[0] for n, p in fdm.named_parameters() if p.requires_grad}
    assert trainable == {"generator"}  # the frozen encoder is not trainable; the generator is
    s = torch.randn(2, 4, 2, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = _label()
    loss = fdm.target_loss(
        [s], torch.zeros(2, 3, 8, 12), y, None, None, generator=torch.Generator().manual_seed(5)
    )
    # by hand: the same drop draw, generator reconstruction, summed squared error on the thing cells / B
    u = torch.rand((2, 1, 2, 3), generator=torch.Generator().manual_seed(5))
    rec = fdm.generator(s.detach() * (u >= 0.75).float())
    thing = torch.zeros(2, 2, 3)
    thing[:, 0, 0] = thing[:, 1, 2] = 1
    expected = 2e-5 * (((rec - e0) ** 2).sum(1) * thing).sum() / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fdm.generator.parameters())
    assert s.grad is not None and s.grad.shape == s.shape
    # empty cell set: zero connected to the generator
    fdm.generator.zero_grad()
    z = fdm.target_loss([s], torch.zeros(2, 3, 8, 12), torch.zeros(2, 8, 12, dtype=torch.long))
    assert z.item() == 0.0 and z.requires_grad
    # student channels differing from the encoder's: a 1x1 align conv
    fdm2 = FeatureDistillationMasking(encoder=FixedEncoder(e0), mode="mgd", student_channels=6)
    assert fdm2.align.in_channels == 6 and fdm2.align.out_channels == 4
    out = fdm2.target_loss([torch.randn(2, 6, 2, 3)], torch.zeros(2, 3, 8, 12), y)
    assert out.shape == () and out > 0


def test_invalid_mode() -> None:
    with pytest.raises(ValueError):
        FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)), mode="l1")


def test_target_min_ratio_admits_mixed_cells_on_the_target_only() -> None:
    """Cell (0,1) is car in 11 of 16 px: below DAFormer's 0.75, above a lowered target_min_ratio of 0.5."""
    y = _label()
    default = FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)))
    lowered = FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)), target_min_ratio=0.5)
    thing_default, _ = default.target_cells(y, None, None, (2, 3))
    thing_lowered, _ = lowered.target_cells(y, None, None, (2, 3))
    assert not thing_default[:, 0, 1].any() and thing_lowered[:, 0, 1].all()
    assert (thing_lowered & ~thing_default).sum() == 2  # only that cell, in both images
    assert lowered.min_ratio == 0.75  # the source term keeps DAFormer's rule
    with pytest.raises(ValueError, match="target_min_ratio"):
        FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)), target_min_ratio=0.0)


def test_own_confidence_gate_and_soft_cells() -> None:
    """Issue 17: FDM's target term is gated by the teacher's confidence, not by the host's scalar q (which
    below 0.5 switched it off for good), and a cell may weigh the share of its pixels that pass."""
    s = _student()
    y = _label(1)
    q = torch.full((1, 8, 12), 0.3)  # DACS's scalar weight of a short run
    conf = torch.full((1, 8, 12), 0.95)
    conf[0, :4, :2] = 0.5  # half of the car cell below the gate
    host = FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)))
    assert not host.target_cells(y, q, None, s.shape, conf)[0].any()  # gate=host: q < 0.5, nothing passes
    own = FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)), gate="confidence",
                                     gate_threshold=0.8)  # fmt: skip
    assert own.target_cells(y, q, None, s.shape, conf)[0].tolist() == [
        [[True, False, False], [False, False, True]]
    ]
    conf[0, 4, 8:12] = 0.5
    conf[0, 5, 8:12] = 0.5
    conf[0, 6, 8] = 0.5  # person cell: 7 of 16 pass
    soft = FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)), gate="confidence",
                                      gate_threshold=0.8, soft_cells=True)  # fmt: skip
    cells = soft.target_cells(y, q, None, s.shape, conf)[0]
    torch.testing.assert_close(cells, torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.0, 7 / 16]]]))
    assert not own.target_cells(y, q, None, s.shape, conf)[0][0, 1, 2]  # hard: 7/16 < 0.5 fails
    loss = soft.target_loss([s], torch.zeros(1, 3, 8, 12), y, q, None, confidence=conf)
    torch.testing.assert_close(loss, torch.tensor(0.005 * (0.5 * 5 + 7 / 16 * 1) / (0.5 + 7 / 16)))
    assert soft.last_active_cells == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="gate"):
        FeatureDistillationMasking(encoder=FixedEncoder(torch.zeros(1, 2, 2, 3)), gate="q")

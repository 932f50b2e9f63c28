"""ImageNet feature distance: ratio label downscaling, thing mask, value, guard (daformer_mic.md §1.6)."""

from __future__ import annotations

import torch
from torch import nn

from src.data.classes import THING_CLASSES
from src.uda.feature_distance import ImageNetFeatureDistance, downscale_label_ratio, feature_distance


def _label() -> torch.Tensor:
    """(1, 8, 12) label, 2x3 cells of 4x4 pixels."""
    y = torch.zeros(1, 8, 12, dtype=torch.long)
    y[0, :4, :4] = 13  # car only -> 13
    c = torch.full((16,), 11)
    c[:3] = 0
    y[0, :4, 4:8] = c.view(4, 4)  # 13/16 = 0.8125 person -> 11
    c = torch.full((16,), 6)
    c[:4] = 255
    y[0, :4, 8:12] = c.view(4, 4)  # 12/16 = 0.75 traffic light (boundary, kept) -> 6
    c = torch.full((16,), 13)
    c[:5] = 0
    y[0, 4:, :4] = c.view(4, 4)  # 11/16 = 0.6875 car < 0.75 -> 255
    c = torch.full((16,), 255)
    c[:2] = 13
    y[0, 4:, 4:8] = c.view(4, 4)  # ignore majority -> 255
    y[0, 4:, 8:12] = 0  # road (stuff) -> 0
    return y


def test_downscale_label_ratio() -> None:
    out = downscale_label_ratio(_label(), scale=4, min_ratio=0.75, num_classes=19)
    assert out.dtype == torch.long
    assert out.tolist() == [[[13, 11, 6], [255, 255, 0]]]
    # (B,1,H,W) input accepted; lower ratio keeps the 0.6875 cell
    out2 = downscale_label_ratio(_label()[:, None], scale=4, min_ratio=0.5, num_classes=19)
    assert out2.tolist() == [[[13, 11, 6], [13, 255, 0]]]


class StubEncoder(nn.Module):
    """Frozen 'ImageNet' encoder returning fixed last-stage features (ignores the image content)."""

    def __init__(self, feat: torch.Tensor) -> None:
        super().__init__()
        self.proj = nn.Linear(2, 2)
        self.drop = nn.Dropout(0.5)
        self.register_buffer("feat", feat)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, self.feat.expand(x.shape[0], -1, -1, -1)]


def _feats() -> tuple[torch.Tensor, torch.Tensor]:
    imnet = torch.zeros(1, 2, 2, 3)
    student = torch.zeros(1, 2, 2, 3)
    student[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # distance 5 (car)
    student[0, :, 0, 1] = torch.tensor([6.0, 8.0])  # distance 10 (person)
    # (0, 2) traffic light: distance 0
    student[0, :, 1, :] = 100.0  # not thing / ignored cells: must not count
    return student, imnet


def test_fd_value_thing_mask_and_gradient() -> None:
    student, imnet = _feats()
    student.requires_grad_(True)
    fd = ImageNetFeatureDistance(encoder=StubEncoder(imnet))
    assert fd.classes == THING_CLASSES and fd.weight == 0.005
    mask = fd.mask(_label(), student.shape)
    assert mask.tolist() == [[[True, True, True], [False, False, False]]]
    loss = fd([torch.zeros(1), student], torch.zeros(1, 3, 8, 12), _label())
    torch.testing.assert_close(loss, torch.tensor(0.005 * (5 + 10 + 0) / 3))
    loss.backward()
    g = student.grad
    assert torch.isfinite(g).all()  # zero difference (cell (0, 2)) gives a zero, not NaN, gradient
    torch.testing.assert_close(g[0, :, 0, 0], 0.005 / 3 * torch.tensor([0.6, 0.8]))
    assert g[0, :, 1].abs().sum() == 0 and g[0, :, 0, 2].abs().sum() == 0


def test_fd_all_classes_variant() -> None:
    student, imnet = _feats()
    fd = ImageNetFeatureDistance(encoder=StubEncoder(imnet), classes=None, weight=1.0)
    loss = fd([student], torch.zeros(1, 3, 8, 12), _label())
    d = 100 * 2**0.5
    torch.testing.assert_close(loss, torch.tensor((5 + 10 + 0 + 3 * d) / 6))


def test_empty_mask_gives_connected_zero() -> None:
    student, imnet = _feats()
    student.requires_grad_(True)
    fd = ImageNetFeatureDistance(encoder=StubEncoder(imnet))
    y = torch.zeros(1, 8, 12, dtype=torch.long)  # road only: no thing cell
    loss = fd([student], torch.zeros(1, 3, 8, 12), y)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))
    empty = feature_distance(student, imnet, torch.zeros(1, 2, 3, dtype=torch.bool))
    assert empty.item() == 0.0 and not torch.isnan(empty)


def test_encoder_frozen_and_stays_eval() -> None:
    enc = StubEncoder(torch.zeros(1, 2, 2, 3))
    parent = nn.ModuleDict({"fd": ImageNetFeatureDistance(encoder=enc)})
    parent.train()
    assert parent["fd"].training and not enc.training and not enc.drop.training
    assert all(not p.requires_grad for p in enc.parameters())

"""Tests of whole-image and sliding-window inference (mmseg whole / slide modes, daformer_mic.md §3, §5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.inference import slide_count_map, slide_inference, slide_windows, whole_inference


class PointwiseModel(nn.Module):
    """Translation-equivariant toy segmentor: one 1x1 conv, ``predict`` = logits at the input size."""

    def __init__(self, in_ch: int = 3, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, num_classes, 1)
        self.calls = 0
        self.batch_sizes: list[int] = []

    def predict(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        return self.conv(x)


class WindowMeanModel(nn.Module):
    """Not equivariant: every pixel of a window gets the mean of that window (tests the averaging)."""

    def predict(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()


def test_slide_windows_hand_computed() -> None:
    # H=10, crop 4, stride 3: n = (10-4+3-1)//3 + 1 = 3 windows: [0,4), [3,7), [6,10)
    boxes = slide_windows(10, 4, crop_size=(4, 4), stride=(3, 3))
    assert boxes == [(0, 4, 0, 4), (3, 7, 0, 4), (6, 10, 0, 4)]
    # last window aligned to the border: H=11 -> starts 0, 3, 6 and a 4th at 9 shifted back to [7, 11)
    assert [b[:2] for b in slide_windows(11, 4, crop_size=(4, 4), stride=(3, 3))] == [
        (0, 4),
        (3, 7),
        (6, 10),
        (7, 11),
    ]
    # image smaller than the crop -> one window = the whole image
    assert slide_windows(5, 6, crop_size=(8, 8), stride=(4, 4)) == [(0, 5, 0, 6)]
    # HRDA test setting: 1024x2048 image, 1024 crops, stride 512 -> 1 x 3 windows
    assert slide_windows(1024, 2048, crop_size=(1024, 1024), stride=(512, 512)) == [
        (0, 1024, 0, 1024),
        (0, 1024, 512, 1536),
        (0, 1024, 1024, 2048),
    ]


def test_count_map_covers_every_pixel() -> None:
    count = slide_count_map(10, 10, crop_size=(4, 4), stride=(3, 3))
    row = torch.tensor([1, 1, 1, 2, 1, 1, 2, 1, 1, 1], dtype=torch.float32)
    torch.testing.assert_close(count, row[:, None] * row[None, :])
    for h, w, crop, stride in [
        (37, 53, (16, 20), (10, 12)),
        (17, 9, (8, 8), (8, 8)),
        (5, 70, (8, 32), (3, 31)),
    ]:
        c = slide_count_map(h, w, crop_size=crop, stride=stride)
        assert c.shape == (h, w) and bool((c >= 1).all())


@pytest.mark.parametrize("batched", [True, False])
def test_slide_equals_whole_for_equivariant_model(batched: bool) -> None:
    torch.manual_seed(0)
    model = PointwiseModel()
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        whole = whole_inference(model, x)
        model.calls, model.batch_sizes = 0, []
        slide = slide_inference(model, x, num_classes=4, crop_size=(16, 20), stride=(10, 12), batched=batched)
    n_windows = len(slide_windows(37, 53, crop_size=(16, 20), stride=(10, 12)))
    assert n_windows == 4 * 4  # rows (37-16+9)//10+1 = 4, cols (53-20+11)//12+1 = 4
    assert slide.shape == (2, 4, 37, 53)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)
    if batched:  # all windows of the batch in one forward
        assert model.calls == 1 and model.batch_sizes == [2 * n_windows]
    else:
        assert model.calls == n_windows and set(model.batch_sizes) == {2}


def test_slide_averages_overlapping_windows() -> None:
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 1, 6)  # [0..5]
    # windows [0,4) mean 1.5 and [2,6) mean 3.5; the overlap [2,4) averages to 2.5
    out = slide_inference(WindowMeanModel(), x, num_classes=1, crop_size=(1, 4), stride=(1, 2))
    torch.testing.assert_close(out.flatten(), torch.tensor([1.5, 1.5, 2.5, 2.5, 3.5, 3.5]))
    out_seq = slide_inference(
        WindowMeanModel(), x, num_classes=1, crop_size=(1, 4), stride=(1, 2), batched=False
    )
    torch.testing.assert_close(out_seq, out)


def test_out_size_and_channel_check() -> None:
    torch.manual_seed(0)
    model = PointwiseModel()
    x = torch.randn(1, 3, 16, 32)
    whole = whole_inference(model, x, out_size=(32, 64))
    torch.testing.assert_close(whole, F.interpolate(model.conv(x), size=(32, 64), mode="bilinear"))
    slide = slide_inference(model, x, num_classes=4, crop_size=(8, 8), stride=(4, 4), out_size=(32, 64))
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="num_classes"):
        slide_inference(model, x, num_classes=5, crop_size=(8, 8), stride=(4, 4))

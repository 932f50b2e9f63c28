"""Flow-guided spatio-temporal aggregation (src/models/temporal_aggregation.py, udass.md §2.5a-b)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.models.inference import slide_inference, whole_inference
from src.models.temporal_aggregation import ClipPredictor, TemporalSegmentor, create_temporal_segmentor
from src.optim import param_groups


class _Identity(nn.Module):
    """Backbone returning the (optionally average-pooled) input as its only feature map."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return [nn.functional.avg_pool2d(x, self.stride) if self.stride > 1 else x]


class _Head(nn.Module):
    """1x1 conv head; identity weights make the logits the (pooled) input itself."""

    def __init__(self, c: int, identity: bool = True) -> None:
        super().__init__()
        self.num_classes = c
        self.conv = nn.Conv2d(c, c, 1, bias=False)
        if identity:
            with torch.no_grad():
                self.conv.weight.copy_(torch.eye(c).view(c, c, 1, 1))

    def forward(self, feats):
        return self.conv(feats[-1])


def _model(c: int = 3, stride: int = 1, identity: bool = True) -> TemporalSegmentor:
    return TemporalSegmentor(backbone=_Identity(stride), head=_Head(c, identity), num_classes=c)


def _use_previous_only(m: TemporalSegmentor) -> None:
    """SF = [0 | I]: the fused output is the warped previous-frame map."""
    c = m.num_classes
    with torch.no_grad():
        w = torch.zeros(c, 2 * c, 1, 1)
        w[torch.arange(c), c + torch.arange(c)] = 1.0
        m.sf_layer.weight.copy_(w)


def _shift_flow(b: int, h: int, w: int, u: float, v: float = 0.0) -> torch.Tensor:
    f = torch.zeros(b, 2, h, w)
    f[:, 0], f[:, 1] = u, v
    return f


@pytest.mark.parametrize("name", ["accel_daformer_mitb0", "accel_deeplabv2_r50"])
def test_fusion_is_identity_at_init(name):
    """[I | 0]: the fused output equals the current-frame logits, whatever the previous frame."""
    torch.manual_seed(0)
    kw = {"head_channels": 16} if "daformer" in name else {}
    m = create_temporal_segmentor(name=name, num_classes=5, **kw).eval()
    x, x_prev = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    out = m.forward_clip(x, x_prev, torch.randn(2, 2, 32, 32))
    assert torch.allclose(out.fused, m(x), atol=1e-6)
    assert torch.allclose(out.fused, out.current)
    assert not torch.allclose(out.previous, out.current)  # the previous frame is there, just not used yet
    assert m.sf_layer.bias is None and tuple(m.sf_layer.weight.shape) == (5, 10, 1, 1)
    assert torch.allclose(m.predict_clip(x, x_prev, torch.zeros(2, 2, 32, 32)), m.predict(x), atol=1e-6)


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="accel_daformer_mitb5"):
        create_temporal_segmentor(name="accel_resnet7")


def test_no_gradient_through_the_previous_frame():
    torch.manual_seed(0)
    m = create_temporal_segmentor(name="accel_daformer_mitb0", num_classes=4, head_channels=16)
    _use_previous_only(m)
    with torch.no_grad():
        m.sf_layer.weight[:, :4] += 0.1  # both halves in use
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    x_prev = torch.randn(1, 3, 32, 32, requires_grad=True)
    out = m.forward_clip(x, x_prev, torch.zeros(1, 2, 32, 32))
    assert not out.previous.requires_grad and out.current.requires_grad
    out.fused.square().sum().backward()
    assert x_prev.grad is None and x.grad is not None and x.grad.abs().sum() > 0
    assert m.sf_layer.weight.grad is not None and m.sf_layer.weight.grad[:, 4:].abs().sum() > 0


@pytest.mark.parametrize("stride", [1, 2])
def test_constant_shift_flow_moves_the_previous_logits(stride):
    """flow = (+4, 0) px at input resolution: warped(p) = prev(p + 4/stride) at the logit resolution, with the
    last columns clamped to the border (Resample2d)."""
    m = _model(c=3, stride=stride)
    _use_previous_only(m)
    h, w = 8, 32
    x_prev = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 3, h, w).contiguous()
    x_prev = x_prev * torch.tensor([1.0, -1.0, 2.0]).view(1, 3, 1, 1)
    prev_logits = m(x_prev)  # (1,3,h/s,w/s)
    out = m.forward_clip(torch.zeros_like(x_prev), x_prev, _shift_flow(1, h, w, 4.0)).fused
    s = 4 // stride
    ws = w // stride
    assert torch.allclose(out[..., : ws - s], prev_logits[..., s:], atol=1e-5)
    assert torch.allclose(out[..., ws - s :], prev_logits[..., -1:].expand_as(out[..., ws - s :]), atol=1e-5)
    # a vertical shift moves rows the same way
    y_prev = x_prev.transpose(-1, -2).contiguous()  # (1,3,w,h): varies along rows
    out = m.forward_clip(torch.zeros_like(y_prev), y_prev, _shift_flow(1, w, h, 0.0, 4.0)).fused
    assert torch.allclose(out[..., : w // stride - s, :], m(y_prev)[..., s:, :], atol=1e-5)


def test_fusio_mask_replaces_the_warped_key_frame_by_the_current_frame():
    m = _model(c=3, stride=2)  # logits at half resolution: fusio works at the input resolution
    _use_previous_only(m)
    x = torch.full((1, 3, 8, 8), 5.0)
    x_prev = torch.full((1, 3, 8, 8), -1.0)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:7] = 1.0
    out = m.forward_clip(x, x_prev, torch.zeros(1, 2, 8, 8), fusio_mask=mask)
    assert out.fused.shape[-2:] == (8, 8)  # input resolution in fusio mode
    inside = mask.bool().expand_as(out.fused)
    assert torch.allclose(out.fused[inside], torch.tensor(5.0)) and torch.allclose(
        out.fused[~inside], torch.tensor(-1.0)
    )
    # the same with a (B,H,W) mask; a wrong size is a clear error
    out2 = m.forward_clip(x, x_prev, torch.zeros(1, 2, 8, 8), fusio_mask=mask[:, 0])
    assert torch.equal(out.fused, out2.fused)
    with pytest.raises(ValueError, match="fusio_mask"):
        m.forward_clip(x, x_prev, torch.zeros(1, 2, 8, 8), fusio_mask=torch.zeros(1, 1, 4, 4))


def test_fusion_layer_has_its_own_param_group():
    m = create_temporal_segmentor(
        name="accel_daformer_mitb0", num_classes=4, head_channels=16, fusion_lr_mult=3.0
    )
    groups = {g["name"]: g for g in param_groups(m, lr=1e-3, weight_decay=0.01, head_lr_mult=10.0)}
    assert groups["fusion"]["params"] == [m.sf_layer.weight] and groups["fusion"]["lr"] == pytest.approx(3e-3)
    assert groups["head"]["lr"] == pytest.approx(1e-2)
    assert all(
        p is not m.sf_layer.weight for n in ("default", "no_decay", "head") for p in groups[n]["params"]
    )
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == len(list(m.parameters()))
    override = {g["name"]: g for g in param_groups(m, lr=1e-3, weight_decay=0.01, fusion_lr_mult=10.0)}
    assert override["fusion"]["lr"] == pytest.approx(1e-2)


def test_clip_predictor_runs_whole_and_sliding_window_inference():
    torch.manual_seed(0)
    m = _model(c=3, identity=False)
    with torch.no_grad():
        m.sf_layer.weight.normal_()
    x, x_prev = torch.randn(2, 3, 16, 24), torch.randn(2, 3, 16, 24)
    flow = _shift_flow(2, 8, 12, 1.0, -0.5)  # half resolution: resized (and scaled) to the frames
    z = ClipPredictor.stack(x, x_prev, flow)
    assert z.shape == (2, 8, 16, 24)
    pred = ClipPredictor(m)
    whole = whole_inference(pred, z, out_size=(32, 48))
    assert torch.allclose(whole_inference(pred, z), m.predict_clip(x, x_prev, z[:, 6:]), atol=1e-6)
    assert whole.shape == (2, 3, 32, 48)
    slide = slide_inference(pred, z, num_classes=3, crop_size=(16, 16), stride=(16, 8))
    assert slide.shape == (2, 3, 16, 24) and torch.isfinite(slide).all()
    with pytest.raises(ValueError, match="frame t, frame t-1, flow"):
        pred.predict(x)


def test_warping_stays_exact_under_bfloat16_autocast():
    """The warp grid is computed in float32 (in bfloat16, x + 4 near x = 1000 rounds to a multiple of 4-8)."""
    m = _model(c=3)
    _use_previous_only(m)
    w = 1024
    x_prev = (torch.arange(w) % 7).float().view(1, 1, 1, w).expand(1, 3, 2, w).contiguous()  # exact in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.forward_clip(torch.zeros_like(x_prev), x_prev, _shift_flow(1, 2, w, 4.0)).fused
    err = (out[..., : w - 4].float() - x_prev[..., 4:]).abs().max()
    assert float(err) < 0.05  # bf16 rounding of the values only (a whole-pixel error would be >= 1)


def test_cnn_student_auxiliary_classifier_is_fused_like_the_main_one():
    """udass.md §2.5a: layer5 = ASPP (6,12,18,24) on layer3, fused by the same sf_layer ([I | 0] at init)."""
    torch.manual_seed(0)
    m = create_temporal_segmentor(name="accel_deeplabv2_r50", num_classes=4, aux_head=True).eval()
    assert m.aux_head.in_index == -2 and m.aux_head.dilations == (6, 12, 18, 24)
    assert m.aux_head.in_channels == 1024
    x, x_prev = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    flow = _shift_flow(1, 32, 32, 2.0)
    with torch.no_grad():
        out = m.forward_clip(x, x_prev, flow)
        feats = m.extract_feat(x)
        assert torch.allclose(out.aux, m.aux_head(feats), atol=1e-5)  # [I | 0]: the current aux logits
        _use_previous_only(m)
        out = m.forward_clip(x, x_prev, flow)
        from src.data.flow import warp

        assert torch.allclose(out.aux, warp(m.aux_head(m.extract_feat(x_prev)), flow), atol=1e-5)
    groups = {g["name"]: g for g in param_groups(m, lr=1.0, weight_decay=0.0, head_lr_mult=10.0)}
    head_ids = {id(p) for p in groups["head"]["params"]}
    assert all(id(p) in head_ids for p in m.aux_head.parameters())  # classifiers at 10x lr (§2.5a)
    plain = create_temporal_segmentor(name="accel_deeplabv2_r50", num_classes=4)
    assert plain.aux_head is None and plain.forward_clip(x, x_prev, flow).aux is None


def test_auxiliary_classifier_is_refused_for_the_vit_student():
    with pytest.raises(ValueError, match="model.aux_head=false"):
        create_temporal_segmentor(name="accel_daformer_mitb0", num_classes=4, aux_head=True)

"""HRDA host (src/models/hrda.py, daformer_mic.md §3): crop geometry, scale attention, fusion, the 0.9 fused +
0.1 detail loss, sliding detail windows, embedding-level mixing, activation checkpointing (src/models/
checkpointing.py), and every method training end to end on the synthetic HRDA configuration."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.backbones.resnet import ResNetBackbone
from src.models.factory import HRDA_SEGMENTOR_NAMES, _wrap_hrda, create_segmentor
from src.models.heads.daformer import DAFormerHead
from src.models.heads.deeplabv2 import DeepLabV2Head
from src.models.hrda import (
    HRDASegmentor,
    box_slices,
    crop,
    detail_crop_box,
    fuse,
    hr_slide_logits,
)
from src.models.inference import slide_inference, whole_inference
from src.models.losses import weighted_cross_entropy
from src.models.segmentor import Segmentor
from src.optim import param_groups
from src.uda.feature_distance import ImageNetFeatureDistance

C = 5


# ---------------------------------------------------------------- toy, translation-equivariant parts
class ToyBackbone(nn.Module):
    """Stride-4 average pooling + 1x1 conv: equivariant to shifts by multiples of 4."""

    def __init__(self, ch: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, ch, 1)
        self.out_channels = [ch]
        self.strides = [4]

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.conv(F.avg_pool2d(x, 4))]


class ToyHead(nn.Module):
    """Pointwise head with the embedding / classifier split of the real heads."""

    def __init__(self, ch: int = 6, num_classes: int = C) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Conv2d(ch, ch, 1)
        self.cls = nn.Conv2d(ch, num_classes, 1)

    def forward_embedding(self, feats: list[Tensor]) -> Tensor:
        return torch.relu(self.embed(feats[0]))

    def classify(self, e: Tensor) -> Tensor:
        return self.cls(e)

    def forward(self, feats: list[Tensor]) -> Tensor:
        return self.classify(self.forward_embedding(feats))


def toy_hrda(**kw) -> HRDASegmentor:
    torch.manual_seed(0)
    kw = {"hr_crop_size": (16, 16), "output_stride": 4, **kw}
    att = ToyHead(num_classes=C if kw.get("attention_classwise", True) else 1)
    return HRDASegmentor(backbone=ToyBackbone(), head=ToyHead(), attention_head=att, num_classes=C, **kw)


# ---------------------------------------------------------------- crop geometry
def test_detail_crop_box_follows_the_reference_rule() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = {detail_crop_box(1024, 1024, (512, 512), 8, generator=g) for _ in range(3000)}
    for y1, y2, x1, x2 in boxes:
        assert y2 - y1 == 512 and x2 - x1 == 512
        assert y1 % 8 == 0 and x1 % 8 == 0 and 0 <= y1 and y2 <= 1024 and x2 <= 1024
    # randint(0, (1024 - 512 + 1) // 8) * 8: offsets 0, 8, ..., 504 (64 values per axis, never 512)
    assert {b[0] for b in boxes} == set(range(0, 512, 8)) and {b[2] for b in boxes} == set(range(0, 512, 8))
    # non-square input, divisor 16; a crop as large as the input is the whole input
    for _ in range(50):
        y1, y2, x1, x2 = detail_crop_box(128, 256, (64, 64), 16, generator=g)
        assert y1 % 16 == 0 and x1 % 16 == 0 and y2 <= 128 and x2 <= 256 and (y2 - y1, x2 - x1) == (64, 64)
    assert detail_crop_box(64, 64, (64, 64), 8) == (0, 64, 0, 64)
    assert detail_crop_box(32, 64, (64, 64), 8)[:2] == (0, 32)  # clipped to the input


def test_box_slices_and_crop() -> None:
    box = (8, 24, 16, 32)
    assert box_slices(box, 4) == (slice(2, 6), slice(4, 8))
    assert box_slices(box, 8) == (slice(1, 3), slice(2, 4))
    assert box_slices((8, 520, 8, 520), 16) == (slice(0, 32), slice(0, 32))  # floored like hr_crop_slice
    t = torch.arange(40 * 40).reshape(1, 40, 40)
    assert torch.equal(crop(t, box), t[:, 8:24, 16:32])


# ---------------------------------------------------------------- attention, fusion
def test_attention_shapes_classwise_and_single() -> None:
    x = torch.randn(2, 3, 32, 32)
    for classwise, channels in ((True, C), (False, 1)):
        m = toy_hrda(attention_classwise=classwise)
        a = m.attention(m.extract_feat(m.context_view(x)))
        assert a.shape == (2, channels, 4, 4)  # context 16x16 at stride 4
        assert float(a.detach().min()) >= 0.0 and float(a.detach().max()) <= 1.0
    # the real heads: DAFormer conv1 attention head at stride 4, DeepLabV2 attention head at stride 8
    m = create_segmentor(name="hrda_daformer_mitb0", num_classes=C, head_channels=16,
                         hrda={"hr_crop_size": [32, 32]})  # fmt: skip
    assert isinstance(m.attention_head, DAFormerHead) and m.output_stride == 4
    assert m.attention_head.embed_dim == 16 and not hasattr(m.attention_head.fuse_layer, "aspp_modules")
    x = torch.randn(2, 3, 64, 64)
    assert m.attention(m.extract_feat(m.context_view(x))).shape == (2, C, 8, 8)
    assert m.predict(x).shape == (2, C, 64, 64) and m(x).shape == (2, C, 16, 16)


def test_fuse_hand_computed_training_and_inference() -> None:
    # context logits 1, detail logits 3, attention 0.25 everywhere; crop 32 input, box (8, 24, 16, 32)
    lr = torch.ones(1, C, 4, 4)  # 16x16 context at stride 4
    hr = torch.full((1, C, 4, 4), 3.0)  # 16x16 detail at stride 4
    att = torch.full((1, C, 4, 4), 0.25)
    box = (8, 24, 16, 32)
    fused, lr_w = fuse(lr, hr, att, size=(8, 8), box=box, output_stride=4, lr_scale=0.5)
    # attention zeroed outside the box at context-output resolution (box // 8 = rows 1:3, cols 2:4)
    want_lr_w = torch.ones(4, 4)
    want_lr_w[1:3, 2:4] = 0.75
    assert torch.equal(lr_w[0, 0], want_lr_w)
    # fused = up((1 - a) lr) + up(a) * detail pasted at box // 4 (rows 2:6, cols 4:8 of the 8x8 output):
    # 0.75 * 1 + 0.25 * 3 = 1.5 where the upsampled attention is the full 0.25 (the box interior), 1 where it
    # is 0 (two cells away from the box; bilinear x2 spreads the attention edge by one cell, as the reference)
    up = F.interpolate(want_lr_w[None, None], size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
    a_up = 1 - up  # (1 - a) * 1 upsampled: the upsampled attention
    assert torch.allclose(fused[0, :, 3:5, 5:7], torch.tensor(1.5))
    assert torch.allclose(fused[0, :, :, :2], torch.tensor(1.0)) and torch.allclose(
        fused[0, :, 7:, :], torch.tensor(1.0)
    )
    hr_in = torch.zeros(8, 8)
    hr_in[2:6, 4:8] = 3.0
    torch.testing.assert_close(fused[0, 0], up + a_up * hr_in)
    # inference: no box, the detail logits cover the whole output, unmasked attention
    fused, _ = fuse(lr, torch.full((1, C, 8, 8), 3.0), att, size=(8, 8), output_stride=4, lr_scale=0.5)
    assert torch.allclose(fused, torch.tensor(1.5))
    with pytest.raises(ValueError, match="do not fill the box"):
        fuse(lr, torch.zeros(1, C, 3, 4), att, size=(8, 8), box=box, output_stride=4, lr_scale=0.5)


def test_training_forward_is_the_fusion_of_its_parts() -> None:
    m = toy_hrda()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(3)
    box = detail_crop_box(32, 32, (16, 16), 8)
    torch.manual_seed(3)
    emb = m.embed([x])[0]
    assert emb.box == box and emb.lr.shape == (2, 6, 4, 4) and emb.hr.shape == (2, 6, 4, 4)
    fused, hr, _ = m.logits(emb)
    lr_feats = m.extract_feat(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False))
    att = torch.sigmoid(m.attention_head(lr_feats))
    hr_want = m.head(m.extract_feat(crop(x, box)))
    want, _ = fuse(m.head(lr_feats), hr_want, att, size=(8, 8), box=box, output_stride=4, lr_scale=0.5)
    torch.testing.assert_close(fused, want)
    torch.testing.assert_close(hr, m.head(m.extract_feat(crop(x, box))))
    torch.manual_seed(3)
    torch.testing.assert_close(m(x), want)  # forward = the same training path
    assert m(x, return_feat=True)[1][0].shape == (2, 6, 4, 4)  # the context features


def test_detail_equal_to_context_crop_means_one_box() -> None:
    """hr crop = the whole input: box = the input, attention unmasked, detail pasted everywhere."""
    m = toy_hrda(hr_crop_size=(32, 32))
    x = torch.randn(1, 3, 32, 32)
    emb = m.embed([x])[0]
    assert emb.box == (0, 32, 0, 32)
    fused = m.logits(emb)[0]
    # no sliding needed at inference either: predict's stride-4 logits equal the training fusion
    m.eval()
    pred = m.predict(x)
    torch.testing.assert_close(
        F.interpolate(fused, size=(32, 32), mode="bilinear", align_corners=False), pred
    )


# ---------------------------------------------------------------- loss
def test_seg_loss_is_09_fused_plus_01_detail_with_cropped_label_and_weight() -> None:
    m = toy_hrda()
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, C, (2, 32, 32))
    y[0, :4] = 255
    w = torch.rand(2, 32, 32)
    calls = []

    def spy(logits, target, weight=None, **kw):
        calls.append((logits.shape[-2:], target.clone(), None if weight is None else weight.clone()))
        return weighted_cross_entropy(logits, target, weight, **kw)

    torch.manual_seed(5)
    loss = m.seg_loss(x, y, w, loss_fn=spy)
    torch.manual_seed(5)
    emb = m.embed([x])[0]
    fused, hr, _ = m.logits(emb)
    want = 0.9 * weighted_cross_entropy(fused, y, w) + 0.1 * weighted_cross_entropy(
        hr, crop(y, emb.box), crop(w, emb.box)
    )
    torch.testing.assert_close(loss, want)
    assert len(calls) == 2 and tuple(calls[0][0]) == (8, 8) and tuple(calls[1][0]) == (4, 4)
    assert torch.equal(calls[1][1], crop(y, emb.box)) and torch.equal(calls[1][2], crop(w, emb.box))
    # lr_loss_weight adds the attention-weighted context term; hr_loss_weight 0 drops the detail term
    m2 = toy_hrda(hr_loss_weight=0.0, lr_loss_weight=0.2)
    calls.clear()
    m2.seg_loss(x, y, None, loss_fn=spy)
    assert [tuple(c[0]) for c in calls] == [(8, 8), (4, 4)] and all(c[2] is None for c in calls)
    loss, feats = m.seg_loss(x, y, return_feat=True)
    assert loss.requires_grad and feats[0].shape == (2, 6, 4, 4)


def test_feature_distance_sees_the_context_view() -> None:
    """FD on the context features: the frozen encoder gets feature_input(x), the mask scale doubles."""
    m = toy_hrda()
    fd = ImageNetFeatureDistance(encoder=copy.deepcopy(m.backbone), classes=[1], min_ratio=0.5, num_classes=C)
    x = torch.randn(2, 3, 32, 32)
    y = torch.ones(2, 32, 32, dtype=torch.long)
    loss, feats = m.seg_loss(x, y, return_feat=True)
    xin = m.feature_input(x)
    assert xin.shape == (2, 3, 16, 16)
    assert fd.mask(y, feats[-1].shape).shape == (2, 4, 4)  # label 32 / context feature 4 = scale 8
    assert float(fd(feats, xin, y)) == pytest.approx(0.0, abs=1e-6)  # same weights, same view: distance 0


# ---------------------------------------------------------------- inference
def test_hr_sliding_windows_equal_whole_detail_pass_for_an_equivariant_model() -> None:
    m = toy_hrda().eval()
    x = torch.randn(2, 3, 48, 64)
    whole = m.decode(m.extract_feat(x))
    slid = hr_slide_logits(m, x, crop_size=(16, 16), stride=(8, 8), output_stride=4)
    torch.testing.assert_close(slid, whole)
    m_whole = toy_hrda(hr_slide_inference=False).eval()
    torch.testing.assert_close(m.predict(x), m_whole.predict(x))
    # the test-time outer sliding window (batched) over HRDA's predict, on a toy whose context branch is
    # constant per image: equal to whole-image inference
    torch.testing.assert_close(
        slide_inference(m, torch.ones(1, 3, 32, 64), num_classes=C, crop_size=(32, 32), stride=(16, 16)),
        whole_inference(m, torch.ones(1, 3, 32, 64)),
    )


def test_predict_windows_are_batched_and_odd_sizes_are_resized() -> None:
    m = toy_hrda().eval()
    sizes = []
    orig = m.extract_feat
    m.extract_feat = lambda x: (sizes.append(tuple(x.shape)), orig(x))[1]  # type: ignore[method-assign]
    out = m.predict(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, C, 32, 32)
    assert sizes == [(2, 3, 16, 16), (18, 3, 16, 16)]  # context, then 9 windows x batch 2 in one forward
    assert m.predict(torch.randn(1, 3, 30, 37)).shape == (1, C, 30, 37)


def test_teacher_pseudo_labels_use_predict() -> None:
    from src.uda.teacher import EMATeacher

    m = toy_hrda()
    t = EMATeacher(student=m)
    x = torch.randn(2, 3, 32, 32)
    p = t.predict(x)
    assert p.shape == (2, C, 32, 32) and torch.allclose(p.sum(1), torch.ones(2, 32, 32))
    torch.testing.assert_close(p, torch.softmax(t.model.predict(x), 1))


# ---------------------------------------------------------------- embedding-level mixing (QuadMix)
def test_embed_shares_one_box_and_blend_crops_the_region() -> None:
    m = toy_hrda()
    xs = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    a, b = m.embed(xs)
    assert a.box == b.box
    region = torch.zeros(2, 1, 32, 32)
    region[:, :, :16] = 1
    seen = []

    def fn(ea, eb, r):
        seen.append((tuple(ea.shape), tuple(r.shape), float(r.mean())))
        return eb

    mixed = m.blend(b, a, region, fn)
    assert seen[0] == ((2, 6, 4, 4), (2, 1, 32, 32), 0.5)
    assert seen[1][1] == (2, 1, 16, 16) and seen[1][2] == float(crop(region, a.box).mean())
    assert mixed.lr is a.lr and mixed.hr is a.hr and mixed.box == a.box
    y = torch.randint(0, C, (2, 32, 32))
    same = m.embedding_loss(m.blend(b, a, region, lambda e1, e2, r: e1), y)
    torch.testing.assert_close(same, m.embedding_loss(b, y))  # blending with itself changes nothing
    assert not torch.allclose(m.embedding_loss(mixed, y), same)
    with pytest.raises(ValueError, match="different detail boxes"):
        other = m.embed([xs[0]])[0]
        other.box = (0, 16, 0, 16) if a.box != (0, 16, 0, 16) else (8, 24, 8, 24)
        m.blend(a, other, region, fn)


# ---------------------------------------------------------------- factory, config errors, optimizer
def test_factory_names_and_clear_errors() -> None:
    assert {"hrda_daformer_mitb5", "hrda_deeplabv2_r101"} <= set(HRDA_SEGMENTOR_NAMES)
    with pytest.raises(ValueError, match="HRDA host"):
        create_segmentor(name="hrda_segformer_b9")
    with pytest.raises(ValueError, match="model=hrda_daformer_mitb0"):
        create_segmentor(name="daformer_mitb0", hrda={"lr_scale": 0.5})
    with pytest.raises(ValueError, match=r"model.hrda: unknown keys \['hr_crop'\]"):
        create_segmentor(name="hrda_daformer_mitb0", hrda={"hr_crop": [64, 64]})
    with pytest.raises(ValueError, match="model.hrda.crop_coord_divisible"):
        toy_hrda(crop_coord_divisible=6)
    with pytest.raises(ValueError, match="model.hrda.hr_crop_size"):
        toy_hrda(hr_crop_size=(18, 16))
    with pytest.raises(ValueError, match="model.hrda.lr_scale"):
        toy_hrda(lr_scale=1.5)
    with pytest.raises(ValueError, match="hr_loss_weight"):
        toy_hrda(hr_loss_weight=0.8, lr_loss_weight=0.5)
    m = toy_hrda()
    with pytest.raises(ValueError, match="multiples of 8"):
        m.seg_loss(torch.randn(1, 3, 36, 36), torch.zeros(1, 36, 36, dtype=torch.long))


def test_attention_head_gets_the_head_learning_rate() -> None:
    m = create_segmentor(name="hrda_daformer_mitb0", num_classes=C, head_channels=16)
    groups = {g["name"]: {id(p) for p in g["params"]} for g in param_groups(m, lr=1.0, weight_decay=0.01)}
    assert {id(p) for p in m.attention_head.parameters()} <= groups["head"]


def _resnet18_dlv2(**hrda) -> nn.Module:
    """The factory's DeepLabV2 branch on a small ResNet (resnet18, output stride 8) to keep the test fast."""
    torch.manual_seed(0)
    backbone = ResNetBackbone(name="resnet18", drop_path_rate=0.2)
    head = DeepLabV2Head(in_channels=backbone.out_channels[-1], num_classes=C)
    if not hrda:
        return Segmentor(backbone=backbone, head=head, num_classes=C)
    return _wrap_hrda(backbone, head, "deeplabv2", C, hrda)


def test_deeplabv2_host_output_stride_8() -> None:
    m = _resnet18_dlv2(hr_crop_size=[32, 32])
    assert isinstance(m.attention_head, DeepLabV2Head) and m.output_stride == 8 and m.size_divisor == 16
    x = torch.randn(1, 3, 64, 64)
    assert m(x).shape == (1, C, 8, 8)
    m.eval()
    assert m.predict(x).shape == (1, C, 64, 64)


# ---------------------------------------------------------------- activation checkpointing
def _grads(model: nn.Module, x: Tensor, y: Tensor, seed: int) -> tuple[Tensor, dict, dict]:
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    loss = model.seg_loss(x, y)
    loss.backward()
    after = torch.randn(1)  # the global random stream after the step
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    bufs = {k: b.clone() for k, b in model.named_buffers()}
    return after, grads, bufs


@pytest.mark.parametrize("name", ["hrda_daformer_mitb0", "resnet18_dlv2"])
def test_checkpoint_encoder_gives_the_same_gradients_and_buffers(name: str) -> None:
    """Per MiT block (with stochastic depth) / per ResNet stage (BatchNorm, drop path): same gradients."""
    torch.manual_seed(0)
    if name == "resnet18_dlv2":
        plain = _resnet18_dlv2().train()
    else:
        kw = {"head_channels": 16, "drop_path_rate": 0.3, "hrda": {"hr_crop_size": [32, 32]}}
        plain = create_segmentor(name=name, num_classes=C, **kw).train()
    ckpt = copy.deepcopy(plain)
    ckpt.backbone.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, C, (2, 64, 64))
    r1, g1, b1 = _grads(plain, x, y, seed=7)
    r2, g2, b2 = _grads(ckpt, x, y, seed=7)
    assert g1.keys() == g2.keys() and len(g1) > 10
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-5, atol=1e-6, msg=k)
    for k in b1:  # BN running statistics and num_batches_tracked updated once, as without checkpointing
        torch.testing.assert_close(b1[k], b2[k], msg=k)
    assert torch.equal(r1, r2)  # the recomputation leaves the global random stream where it was
    # inference and no-grad passes run unchanged (no checkpointing outside training)
    ckpt.eval()
    with torch.no_grad():
        torch.testing.assert_close(ckpt.predict(x), plain.eval().predict(x))


def test_checkpoint_encoder_from_the_factory_flag() -> None:
    m = create_segmentor(name="daformer_mitb0", head_channels=16, checkpoint_encoder=True)
    assert m.backbone.grad_checkpointing


# ---------------------------------------------------------------- end to end on the synthetic HRDA setting
HRDA_TINY = [
    "model.hrda.hr_crop_size=[32,32]",  # tiny 64x64 crops: a 32 detail crop, 8x8 windows of 32 at stride 16
    "eval.crop_size=[64,64]",
    "eval.stride=[32,32]",
    "data.target_pseudo_margins=[2,15,2,2]",
]


@pytest.mark.parametrize(
    "overrides, losses",
    [
        # MIC on the HRDA host (source + FD, ClassMix, masked loss): the udass case below covers each stage of
        # it too, so it is in the slow set
        pytest.param(["experiment=mic_hrda_synthetic"], {"train/loss_mix", "train/loss_mask"},
                     marks=pytest.mark.slow),
        (["experiment=udass_hrda_synthetic", "uda.mix.quadmix_start=1", "uda.mix.feature_mix=true"],
         {"train/loss_src", "train/loss_fd", "train/loss_mix", "train/loss_mask"}),
        pytest.param(["experiment=mic_hrda_synthetic", "uda=omuda", "uda.mask.masker.block_size=8"],
                     {"train/loss_fd", "train/loss_fdm", "train/cdm_keep_rate"}, marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_methods_train_on_the_hrda_host(train_cfg, overrides, losses):
    from src.train import train

    cfg = train_cfg(*overrides, *HRDA_TINY, "trainer.max_steps=2", "trainer.val_check_interval=2")
    out = train(cfg)
    assert out["model"] == "hrda_daformer_mitb0" and out["steps"] == 2
    assert out["mIoU"] is not None and "teacher_mIoU" in out
    metrics = Path(cfg.paths.output_dir, "csv", "metrics.csv").read_text().splitlines()[0].strip().split(",")
    assert losses <= set(metrics), metrics
    assert json.loads(Path(cfg.paths.output_dir, "results.json").read_text()) == out

"""Tests of the segmentation models: MiT backbones, ResNet-V1c, DAFormer / DeepLabV2 heads, segmentor,
factory and pretrained-weight loading (daformer_mic.md §4). No downloads; CPU; small inputs."""

from __future__ import annotations

import functools
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models.backbones.mix_transformer import MIT_CONFIGS, EfficientSelfAttention, MixVisionTransformer
from src.models.backbones.resnet import ResNetBackbone
from src.models.factory import SEGMENTOR_NAMES, create_backbone, create_segmentor
from src.models.heads.daformer import DAFormerHead
from src.models.heads.deeplabv2 import DeepLabV2Head
from src.models.pretrained import load_backbone_weights
from src.models.segmentor import Segmentor

MIT_NAMES = [f"daformer_mitb{i}" for i in range(6)]


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """One intra-op thread: the 2 shared CPU cores get oversubscribed otherwise (4x slower under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.lru_cache(maxsize=1)
def _cached_segmentor(name: str) -> Segmentor:
    """Keeps the last model (B5, ~1 s to build, reused by 4 tests); used read-only, in eval mode."""
    torch.manual_seed(0)
    return create_segmentor(name=name).eval()


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------- MiT / DAFormer
@pytest.mark.parametrize("name", MIT_NAMES)
def test_daformer_shapes_strides_channels(name: str) -> None:
    model = _cached_segmentor(name)
    dims = list(MIT_CONFIGS[name.replace("daformer_mitb", "mit_b")]["embed_dims"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, feats = model(x, return_feat=True)
        pred = model.predict(x)
    assert model.backbone.out_channels == dims
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // s, 64 // s) for c, s in zip(dims, (4, 8, 16, 32))]
    assert logits.shape == (2, 19, 16, 16)  # DAFormer head: stride 4
    assert pred.shape == (2, 19, 64, 64)  # predict: input size


def _mit_block_params(d: int, sr: int, mlp_ratio: int = 4) -> int:
    h = d * mlp_ratio
    n = 2 * 2 * d  # norm1, norm2
    n += (d * d + d) + (2 * d * d + 2 * d) + (d * d + d)  # q, kv, proj
    if sr > 1:
        n += d * d * sr * sr + d + 2 * d  # sr conv + LN
    n += (d * h + h) + (9 * h + h) + (h * d + d)  # fc1, depthwise 3x3, fc2
    return n


def _mit_params(dims: list[int], depths: list[int], sr=(8, 4, 2, 1)) -> int:
    total, cin = 0, 3
    for i, (d, n_blocks) in enumerate(zip(dims, depths)):
        k = 7 if i == 0 else 3
        total += k * k * cin * d + d + 2 * d  # patch embed conv + LN
        total += n_blocks * _mit_block_params(d, sr[i])
        total += 2 * d  # stage norm
        cin = d
    return total


def test_mit_parameter_counts() -> None:
    b0 = create_backbone(name="mit_b0")
    # exact hand-computed count, and the published ~3.3M (SegFormer B0 encoder) within 2 %
    assert _n_params(b0) == _mit_params([32, 64, 160, 256], [2, 2, 2, 2])
    assert abs(_n_params(b0) / 3.3e6 - 1) < 0.02
    b5 = _cached_segmentor("daformer_mitb5").backbone
    assert _n_params(b5) == _mit_params([64, 128, 320, 512], [3, 6, 40, 3])
    assert abs(_n_params(b5) / 81.4e6 - 1) < 0.02


def test_mit_key_names_match_segformer_layout() -> None:
    keys = set(_cached_segmentor("daformer_mitb5").backbone.state_dict())
    expected = {
        "patch_embed1.proj.weight",
        "patch_embed1.norm.bias",
        "patch_embed4.proj.weight",
        "block1.0.norm1.weight",
        "block1.0.attn.q.weight",
        "block1.0.attn.kv.bias",
        "block1.0.attn.sr.weight",
        "block1.0.attn.norm.weight",
        "block1.0.attn.proj.weight",
        "block1.0.norm2.weight",
        "block1.0.mlp.fc1.weight",
        "block1.0.mlp.dwconv.dwconv.weight",
        "block1.0.mlp.fc2.bias",
        "block3.39.mlp.fc2.weight",
        "norm1.weight",
        "norm4.bias",
    }
    assert expected <= keys
    assert "block3.40.norm1.weight" not in keys  # B5 stage 3 has 40 blocks
    assert "block4.0.attn.sr.weight" not in keys  # sr_ratio 1 in stage 4: no reduction
    assert not any(k.startswith("head") for k in keys)
    b5 = _cached_segmentor("daformer_mitb5").backbone
    assert b5.patch_embed1.proj.kernel_size == (7, 7) and b5.patch_embed1.proj.stride == (4, 4)
    assert b5.patch_embed2.proj.kernel_size == (3, 3) and b5.patch_embed2.proj.stride == (2, 2)
    assert b5.block1[0].attn.sr.stride == (8, 8) and b5.block3[0].attn.sr.stride == (2, 2)
    assert b5.block1[0].norm1.eps == 1e-6 and b5.norm4.eps == 1e-6


def test_mit_stochastic_depth_linear_over_all_blocks() -> None:
    b5 = _cached_segmentor("daformer_mitb5").backbone
    blocks = [blk for i in range(1, 5) for blk in getattr(b5, f"block{i}")]
    assert len(blocks) == 52
    assert isinstance(blocks[0].drop_path, nn.Identity)  # rate 0 for the first block
    assert blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
    assert b5.block2[0].drop_path.drop_prob == pytest.approx(0.1 * 3 / 51)
    small = create_backbone(name="mit_b0", drop_path_rate=0.3)
    assert small.block4[1].drop_path.drop_prob == pytest.approx(0.3)


def test_mit_init_as_segformer() -> None:
    torch.manual_seed(0)
    b0 = create_backbone(name="mit_b0")
    w = b0.block2[0].mlp.fc1.weight
    # trunc_normal_(std=0.02) with timm's absolute bounds [-2, 2] (as SegFormer): effectively N(0, 0.02)
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and w.abs().max() <= 2
    assert torch.all(b0.block2[0].mlp.fc1.bias == 0)
    assert torch.all(b0.norm3.weight == 1) and torch.all(b0.norm3.bias == 0)
    conv = b0.patch_embed1.proj  # fan_out = 7*7*32
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (49 * 32)), rel=0.05)
    dw = b0.block1[0].mlp.dwconv.dwconv  # depthwise: fan_out = 3*3*128/128
    assert dw.weight.std().item() == pytest.approx(math.sqrt(2 / 9), rel=0.05)


def test_efficient_attention_matches_explicit_formula() -> None:
    torch.manual_seed(0)
    d, heads, sr, h, w = 16, 2, 2, 4, 6
    attn = EfficientSelfAttention(dim=d, num_heads=heads, sr_ratio=sr).eval()
    x = torch.randn(2, h * w, d)
    q = attn.q(x).reshape(2, h * w, heads, d // heads).transpose(1, 2)
    x_map = x.transpose(1, 2).reshape(2, d, h, w)
    x_red = attn.norm(attn.sr(x_map).flatten(2).transpose(1, 2))  # (2, 6, d): 2x3 reduced tokens
    assert x_red.shape == (2, (h // sr) * (w // sr), d)
    k, v = attn.kv(x_red).chunk(2, dim=-1)
    k = k.reshape(2, -1, heads, d // heads).transpose(1, 2)
    v = v.reshape(2, -1, heads, d // heads).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), dim=-1)
    expected = attn.proj((a @ v).transpose(1, 2).reshape(2, h * w, d))
    torch.testing.assert_close(attn(x, h, w), expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- DAFormer head
def test_daformer_head_structure_and_param_count() -> None:
    in_ch, e, c, k = [8, 16, 24, 32], 16, 12, 5
    head = DAFormerHead(in_channels=in_ch, num_classes=k, embed_dim=e, channels=c)
    cat = 4 * e
    expected = sum(ci * e + e for ci in in_ch)  # linear embeds (no norm)
    expected += cat * c + 2 * c  # d=1: 1x1 conv (no bias) + BN
    expected += 3 * ((cat * 9 + 2 * cat) + (cat * c + 2 * c))  # d=6,12,18: depthwise+BN, pointwise+BN
    expected += 4 * c * c * 9 + 2 * c  # 3x3 bottleneck + BN
    expected += c * k + k  # classifier
    assert _n_params(head) == expected
    dws = head.fuse_layer.aspp_modules[2]
    assert dws.depthwise_conv.conv.groups == cat and dws.depthwise_conv.conv.dilation == (12, 12)
    assert head.fuse_layer.bottleneck.conv.kernel_size == (3, 3)
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1


def test_daformer_head_embedding_classify_split() -> None:
    torch.manual_seed(0)
    head = DAFormerHead(in_channels=[8, 16, 24, 32], num_classes=5, embed_dim=16, channels=12).eval()
    feats = [torch.randn(2, c, 32 // s, 32 // s) for c, s in zip([8, 16, 24, 32], [1, 2, 4, 8])]
    emb = head.forward_embedding(feats)
    assert emb.shape == (2, 12, 32, 32)  # size of the stride-4 level
    assert torch.all(emb >= 0)  # ends with ReLU
    torch.testing.assert_close(head.classify(emb), head(feats))
    torch.testing.assert_close(head.classify(emb), F.conv2d(emb, head.conv_seg.weight, head.conv_seg.bias))


def test_head_channels_override() -> None:
    model = create_segmentor(name="daformer_mitb0", num_classes=7, head_channels=32)
    assert model.head.embed_dim == 32 and model.head.channels == 32
    assert model.head.conv_seg.weight.shape == (7, 32, 1, 1)
    with pytest.raises(ValueError, match="head_channels"):
        create_segmentor(name="deeplabv2_r50", head_channels=32)


# --------------------------------------------------------------------------------------------- DeepLabV2
def test_deeplabv2_r101_output_stride_8_and_deep_stem() -> None:
    torch.manual_seed(0)
    model = create_segmentor(name="deeplabv2_r101").eval()
    bb = model.backbone
    assert isinstance(bb, ResNetBackbone) and bb.model_name == "resnet101c"
    assert bb.out_channels == [256, 512, 1024, 2048]
    assert [m.out_channels for m in bb.conv1 if isinstance(m, nn.Conv2d)] == [32, 32, 64]  # V1c deep stem
    assert bb.layer3[0].conv2.dilation == (1, 1) and bb.layer3[1].conv2.dilation == (
        2,
        2,
    )  # contract_dilation
    assert bb.layer4[0].conv2.dilation == (2, 2) and bb.layer4[2].conv2.dilation == (4, 4)
    assert isinstance(bb.layer1[0].downsample[0], nn.Conv2d)  # no avg-down shortcut
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits, feats = model(x, return_feat=True)
        pred = model.predict(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (8, 8), (8, 8)]
    assert logits.shape == (1, 19, 8, 8)
    assert pred.shape == (1, 19, 64, 64)
    assert abs(_n_params(bb) / 42.5e6 - 1) < 0.02  # ResNet-101 without fc


def test_deeplabv2_head_sums_dilated_convs() -> None:
    torch.manual_seed(0)
    head = DeepLabV2Head(in_channels=8, num_classes=3)
    assert head.dilations == (6, 12) and len(head.aspp_modules) == 2  # "dlv2red"
    assert len(DeepLabV2Head(in_channels=8, num_classes=3, dilations=(6, 12, 18, 24)).aspp_modules) == 4
    x = torch.randn(2, 8, 10, 10)
    expected = sum(
        F.conv2d(x, c.weight, c.bias, padding=d, dilation=d) for c, d in zip(head.aspp_modules, (6, 12))
    )
    torch.testing.assert_close(head([torch.randn(2, 4, 20, 20), x]), expected)
    assert head.forward_embedding([x]) is x
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d)) for m in head.modules())
    big = DeepLabV2Head(in_channels=256, num_classes=19)
    assert big.aspp_modules[0].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(big.aspp_modules[0].bias == 0)


# ----------------------------------------------------------------------------------------- segmentor/factory
def test_segmentor_api_and_param_prefixes() -> None:
    torch.manual_seed(0)
    model = create_segmentor(name="daformer_mitb0", num_classes=5, head_channels=16).eval()
    assert [n for n, _ in model.named_children()] == ["backbone", "head"]
    assert all(n.startswith(("backbone.", "head.")) for n, _ in model.named_parameters())
    x = torch.randn(2, 3, 50, 70)  # not a multiple of 32
    with torch.no_grad():
        feats = model.extract_feat(x)
        logits = model(x)
        logits2, feats2 = model(x, return_feat=True)
        pred = model.predict(x)
    assert len(feats) == 4 and all(torch.equal(a, b) for a, b in zip(feats, feats2))
    torch.testing.assert_close(model.decode(feats), logits)
    torch.testing.assert_close(logits2, logits)
    assert logits.shape == (2, 5, 13, 18)
    assert pred.shape == (2, 5, 50, 70)
    torch.testing.assert_close(
        pred, F.interpolate(logits, size=(50, 70), mode="bilinear", align_corners=False)
    )
    with pytest.raises(ValueError, match="classes"):
        Segmentor(backbone=model.backbone, head=model.head, num_classes=19)


def test_factory_names_and_errors() -> None:
    assert set(SEGMENTOR_NAMES) == {*MIT_NAMES, "deeplabv2_r101", "deeplabv2_r50"}
    with pytest.raises(ValueError, match="daformer_mitb5"):
        create_segmentor(name="segformer_b9")
    with pytest.raises(ValueError, match="timm has no MiT"):
        create_segmentor(name="daformer_mitb0", pretrained="timm")
    assert isinstance(create_backbone(name="daformer_mitb0"), MixVisionTransformer)
    assert create_backbone(name="mit_b0").out_channels == [32, 64, 160, 256]


# --------------------------------------------------------------------------------------------- pretrained
def _segformer_checkpoint(tmp_path, **extra) -> tuple[str, dict[str, torch.Tensor]]:
    """A state dict in SegFormer's ``mit_b0.pth`` layout (+ ImageNet classifier), nested under state_dict."""
    torch.manual_seed(1)
    sd = {k: v.clone() for k, v in create_backbone(name="mit_b0").state_dict().items()}
    ckpt = dict(sd, **{"head.weight": torch.randn(1000, 256), "head.bias": torch.zeros(1000)}, **extra)
    path = tmp_path / "mit_b0.pth"
    torch.save({"state_dict": ckpt, "meta": {"note": "test"}}, path)
    return str(path), sd


def test_load_segformer_layout(tmp_path, caplog) -> None:
    path, sd = _segformer_checkpoint(tmp_path, dist_token=torch.zeros(1, 1, 32))
    torch.manual_seed(2)
    backbone = create_backbone(name="mit_b0")
    with caplog.at_level(logging.WARNING):
        missing, unexpected = load_backbone_weights(backbone, path)
    assert missing == []
    assert unexpected == ["dist_token"]  # the classifier head.* is dropped, the unknown key reported
    assert "dist_token" in caplog.text
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    # via the factory: the segmentor's backbone gets the same weights
    model = create_segmentor(name="daformer_mitb0", pretrained=path, head_channels=16)
    assert torch.equal(model.backbone.block3[1].attn.kv.weight, sd["block3.1.attn.kv.weight"])


def test_load_strips_prefixes_and_selects_student(tmp_path) -> None:
    torch.manual_seed(3)
    student = create_backbone(name="mit_b0").state_dict()
    teacher = create_backbone(name="mit_b0").state_dict()
    ckpt = {
        "state_dict": {
            **{f"model.backbone.{k}": v for k, v in student.items()},
            **{f"ema_model.backbone.{k}": v for k, v in teacher.items()},
            "model.head.conv_seg.weight": torch.zeros(19, 256, 1, 1),
        }
    }
    torch.save(ckpt, tmp_path / "uda.pth")
    backbone = create_backbone(name="mit_b0")
    missing, unexpected = load_backbone_weights(backbone, tmp_path / "uda.pth")
    assert missing == [] and unexpected == []
    assert torch.equal(backbone.norm4.weight, student["norm4.weight"])
    assert torch.equal(backbone.block1[0].attn.q.weight, student["block1.0.attn.q.weight"])
    torch.save({"model": {f"module.{k}": v for k, v in teacher.items()}}, tmp_path / "ddp.pth")
    assert load_backbone_weights(backbone, tmp_path / "ddp.pth") == ([], [])
    assert torch.equal(backbone.block1[0].attn.q.weight, teacher["block1.0.attn.q.weight"])


def test_load_errors(tmp_path) -> None:
    backbone = create_backbone(name="mit_b0")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth.*mit_b5\.pth"):
        load_backbone_weights(backbone, tmp_path / "nowhere.pth")
    sd = dict(backbone.state_dict())
    sd["block2.1.mlp.fc1.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"block2\.1\.mlp\.fc1\.weight"):
        load_backbone_weights(backbone, tmp_path / "bad.pth")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="No key"):
        load_backbone_weights(backbone, tmp_path / "other.pth")


def test_resnet_loads_timm_and_mmseg_layouts(tmp_path) -> None:
    torch.manual_seed(4)
    src = ResNetBackbone(depth=50).state_dict()
    timm_sd = dict(src, **{"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    stem = {"conv1.0": "stem.0", "conv1.1": "stem.1", "conv1.3": "stem.3", "conv1.4": "stem.4"}
    stem.update({"conv1.6": "stem.6", "bn1": "stem.7"})
    mmseg_sd = {}
    for k, v in src.items():
        for timm_name, mm_name in stem.items():
            if k.startswith(timm_name + "."):
                k = mm_name + k[len(timm_name) :]
                break
        mmseg_sd[k] = v
    assert "stem.7.running_var" in mmseg_sd and "bn1.running_var" not in mmseg_sd
    for name, sd in (("timm.pth", timm_sd), ("mmseg.pth", {"state_dict": mmseg_sd, "meta": {}})):
        torch.save(sd, tmp_path / name)
        backbone = ResNetBackbone(depth=50)
        assert load_backbone_weights(backbone, tmp_path / name) == ([], [])
        assert torch.equal(backbone.bn1.running_var, src["bn1.running_var"])
        assert torch.equal(backbone.layer4[2].conv3.weight, src["layer4.2.conv3.weight"])

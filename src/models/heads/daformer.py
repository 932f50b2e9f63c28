"""DAFormer decode head: multi-level linear embedding + separable-ASPP context fusion.

Re-implemented from daformer_mic.md §4.2 (mmseg ``DAFormerHead`` with ``fusion_cfg`` type 'aspp', sep=True,
dilations (1, 6, 12, 18), pool=False; config ``daformer_sepaspp_mitb5``):

1. each encoder level -> Linear to ``embed_dim`` (no norm / activation), reshaped to a map and bilinearly
   upsampled to the stride-4 size (align_corners=False); the 4 maps are concatenated;
2. fusion: parallel branches on the concatenation, each to ``channels``: d=1 -> 1x1 conv+BN+ReLU;
   d>1 -> depthwise 3x3 conv with dilation d + BN + ReLU, then pointwise 1x1 conv + BN + ReLU
   (mmcv ``DepthwiseSeparableConvModule`` default);
3. branches concatenated -> 3x3 bottleneck conv + BN + ReLU -> ``channels``;
4. Dropout2d(0.1) -> 1x1 classifier (stride-4 logits).

Module names follow the DAFormer release (``embed_layers.{i}.proj``, ``fuse_layer.aspp_modules``,
``fuse_layer.bottleneck``, ``conv_seg``). Initialisation as mmcv: convs Kaiming-normal (fan_out, ReLU) with
zero bias, BN 1/0, Linear embeddings PyTorch default, classifier Normal(0, 0.01) with zero bias.

``forward_embedding`` / ``classify`` split the head before the dropout so that methods mixing decoder
embeddings (e.g. QuadMix feature mixing) can operate on the fused ``channels``-d map.

``fusion="conv1"`` is the ``daformer_conv1`` variant (§4.2: one 1x1 conv + BN + ReLU instead of the separable
ASPP, ~SegFormer's head): HRDA's scale-attention head (daformer_mic.md §3, ``src/models/hrda.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DAFormerHead", "ConvBNReLU", "DepthwiseSeparableConvBNReLU", "SeparableASPP"]


class ConvBNReLU(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + ReLU, the mmcv ``ConvModule`` with BN/ReLU (names conv, bn)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int = 1, dilation: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvBNReLU(nn.Module):
    """Depthwise kxk dilated conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU (mmcv DSConv default)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int = 3, dilation: int = 1
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvBNReLU(
            in_channels, in_channels, kernel_size=kernel_size, dilation=dilation, groups=in_channels
        )
        self.pointwise_conv = ConvBNReLU(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class SeparableASPP(nn.Module):
    """DAFormer context-aware fusion: separable ASPP branches (no image pooling) + 3x3 bottleneck."""

    def __init__(self, *, in_channels: int, channels: int, dilations: Sequence[int] = (1, 6, 12, 18)) -> None:
        super().__init__()
        self.aspp_modules = nn.ModuleList(
            ConvBNReLU(in_channels, channels, kernel_size=1)
            if d == 1
            else DepthwiseSeparableConvBNReLU(in_channels, channels, kernel_size=3, dilation=d)
            for d in dilations
        )
        self.bottleneck = ConvBNReLU(len(dilations) * channels, channels, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.aspp_modules], dim=1))


class LinearEmbed(nn.Module):
    """Per-level token embedding: (B, C, H, W) -> Linear(C, embed_dim) -> (B, embed_dim, H, W)."""

    def __init__(self, *, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        x = self.proj(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(b, -1, h, w)


class DAFormerHead(nn.Module):
    """DAFormer decoder (daformer_mic.md §4.2): embed -> upsample to stride 4 -> sep-ASPP -> classifier.

    Args:
        in_channels: channels of the 4 encoder levels (e.g. MiT-B5 [64, 128, 320, 512]).
        num_classes: output classes (19).
        embed_dim: per-level embedding width (256).
        channels: fused decoder width (256).
        dilations: ASPP dilations ((1, 6, 12, 18)); d=1 is a 1x1 conv, the others depthwise-separable.
        dropout: Dropout2d probability before the classifier (0.1).
        fusion: ``"aspp"`` (DAFormer's separable ASPP, default) or ``"conv1"`` (1x1 conv + BN + ReLU, the
            ``daformer_conv1`` variant used by HRDA's scale attention).
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        num_classes: int,
        embed_dim: int = 256,
        channels: int = 256,
        dilations: Sequence[int] = (1, 6, 12, 18),
        dropout: float = 0.1,
        fusion: str = "aspp",
    ) -> None:
        super().__init__()
        if fusion not in ("aspp", "conv1"):
            raise ValueError(f"fusion must be 'aspp' or 'conv1', got {fusion!r}")
        self.in_channels = list(in_channels)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.channels = channels
        self.embed_layers = nn.ModuleList(
            LinearEmbed(in_channels=c, embed_dim=embed_dim) for c in in_channels
        )
        self.fuse_layer: nn.Module
        if fusion == "aspp":
            self.fuse_layer = SeparableASPP(
                in_channels=embed_dim * len(self.in_channels), channels=channels, dilations=dilations
            )
        else:
            self.fuse_layer = ConvBNReLU(embed_dim * len(self.in_channels), channels, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward_embedding(self, feats: Sequence[Tensor]) -> Tensor:
        """Fused decoder feature map (B, channels, H/4, W/4), before dropout and classifier."""
        if len(feats) != len(self.embed_layers):
            raise ValueError(f"expected {len(self.embed_layers)} feature levels, got {len(feats)}")
        size = feats[0].shape[-2:]
        embeds = []
        for feat, embed in zip(feats, self.embed_layers, strict=True):
            e = embed(feat)
            if e.shape[-2:] != size:
                e = F.interpolate(e, size=size, mode="bilinear", align_corners=False)
            embeds.append(e)
        return self.fuse_layer(torch.cat(embeds, dim=1))

    def classify(self, embedding: Tensor) -> Tensor:
        """Dropout2d + 1x1 classifier on a (possibly mixed) decoder embedding."""
        return self.conv_seg(self.dropout(embedding))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return self.classify(self.forward_embedding(feats))

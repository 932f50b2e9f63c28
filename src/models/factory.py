"""Model factory: segmentors and backbones by name (daformer_mic.md §4).

Segmentor names: ``daformer_mitb0`` ... ``daformer_mitb5`` (MiT encoder + DAFormer head, §4.1-§4.2; B5 is the
paper model) and ``deeplabv2_r101`` / ``deeplabv2_r50`` (ResNet-V1c output stride 8 + "dlv2red" head with
dilations (6, 12), §4.3).

``pretrained``:
  * ``None``: random initialisation;
  * a local file path: backbone weights loaded by name with :func:`load_backbone_weights`
    (SegFormer ``mit_bX.pth`` for MiT, timm ``resnet101c`` or open-mmlab ``resnet101_v1c`` for ResNet);
  * ``"timm"``: timm's hub ImageNet weights (ResNet only, needs internet; timm has no MiT).
"""

from __future__ import annotations

import logging

from torch import nn

from src.models.backbones import mix_transformer
from src.models.backbones.resnet import ResNetBackbone
from src.models.heads.daformer import DAFormerHead
from src.models.heads.deeplabv2 import DeepLabV2Head
from src.models.pretrained import WEIGHTS_HELP, load_backbone_weights
from src.models.segmentor import Segmentor

__all__ = ["create_segmentor", "create_backbone", "SEGMENTOR_NAMES", "BACKBONE_NAMES"]

log = logging.getLogger(__name__)

_MIT = {f"mit_b{i}": getattr(mix_transformer, f"mit_b{i}") for i in range(6)}
_RESNET_DEPTH = {"resnet101": 101, "resnet50": 50}

#: segmentor name -> (backbone name, head kind)
_SEGMENTORS: dict[str, tuple[str, str]] = {
    **{f"daformer_mitb{i}": (f"mit_b{i}", "daformer") for i in range(6)},
    "deeplabv2_r101": ("resnet101", "deeplabv2"),
    "deeplabv2_r50": ("resnet50", "deeplabv2"),
}
SEGMENTOR_NAMES: list[str] = list(_SEGMENTORS)
BACKBONE_NAMES: list[str] = [*_MIT, *_RESNET_DEPTH]


def _backbone_name(name: str) -> str:
    if name in _SEGMENTORS:
        return _SEGMENTORS[name][0]
    if name in _MIT or name in _RESNET_DEPTH:
        return name
    raise ValueError(f"Unknown model name '{name}'. Valid names: {SEGMENTOR_NAMES + BACKBONE_NAMES}")


def create_backbone(
    *, name: str, pretrained: str | None = None, drop_path_rate: float | None = None
) -> nn.Module:
    """Backbone only (e.g. the frozen ImageNet encoder of the feature distance, daformer_mic.md §1.6).

    ``name`` is a segmentor name (its backbone is built) or a backbone name (``mit_b0``..``mit_b5``,
    ``resnet101``, ``resnet50``).
    """
    bb_name = _backbone_name(name)
    if bb_name in _MIT:
        if pretrained == "timm":
            raise ValueError(
                f"pretrained='timm' is not available for {bb_name}: timm has no MiT (SegFormer) weights. "
                f"Pass the local SegFormer ImageNet file instead (model.pretrained=/path/to/{bb_name}.pth). "
                + WEIGHTS_HELP
            )
        overrides = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
        backbone: nn.Module = _MIT[bb_name](**overrides)
    else:
        backbone = ResNetBackbone(
            depth=_RESNET_DEPTH[bb_name],
            output_stride=8,
            pretrained=pretrained == "timm",
            drop_path_rate=0.0 if drop_path_rate is None else drop_path_rate,
        )
    if pretrained is not None and pretrained != "timm":
        load_backbone_weights(backbone, pretrained)
    log.info("Built backbone %s (pretrained=%s)", bb_name, pretrained)
    return backbone


def create_segmentor(
    *,
    name: str,
    num_classes: int = 19,
    pretrained: str | None = None,
    head_channels: int | None = None,
    drop_path_rate: float | None = None,
) -> Segmentor:
    """Build a segmentor by name.

    Args:
        name: one of :data:`SEGMENTOR_NAMES`.
        num_classes: output classes (19 Cityscapes train ids).
        pretrained: None, a local backbone checkpoint path, or "timm" (ResNet only).
        head_channels: overrides ``embed_dim`` and ``channels`` of the DAFormer head (256 by default);
            meant for small CPU models. Not applicable to DeepLabV2 (ValueError).
        drop_path_rate: MiT stochastic depth (default 0.1) / timm ResNet drop path (default 0).
    """
    if name not in _SEGMENTORS:
        raise ValueError(f"Unknown segmentor name '{name}'. Valid names: {SEGMENTOR_NAMES}")
    bb_name, head_kind = _SEGMENTORS[name]
    backbone = create_backbone(name=bb_name, pretrained=pretrained, drop_path_rate=drop_path_rate)
    out_channels: list[int] = list(backbone.out_channels)  # type: ignore[arg-type]
    head: nn.Module
    if head_kind == "daformer":
        kw = {} if head_channels is None else {"embed_dim": head_channels, "channels": head_channels}
        head = DAFormerHead(in_channels=out_channels, num_classes=num_classes, **kw)
    else:
        if head_channels is not None:
            raise ValueError(f"head_channels applies to DAFormer heads only, not to '{name}'")
        head = DeepLabV2Head(in_channels=out_channels[-1], num_classes=num_classes)
    return Segmentor(backbone=backbone, head=head, num_classes=num_classes)

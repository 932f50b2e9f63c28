"""Model factory: segmentors and backbones by name (daformer_mic.md §4).

Segmentor names: ``daformer_mitb0`` ... ``daformer_mitb5`` (MiT encoder + DAFormer head, §4.1-§4.2; B5 is the
paper model) and ``deeplabv2_r101`` / ``deeplabv2_r50`` (ResNet-V1c output stride 8 + "dlv2red" head with
dilations (6, 12), §4.3). ``hrda_<name>`` wraps any of them in the HRDA multi-resolution host
(``src.models.hrda``, daformer_mic.md §3), e.g. ``hrda_daformer_mitb5`` (HRDA / MIC(HRDA) / UDASS ViT) and
``hrda_deeplabv2_r101`` (HRDA with the DeepLabV2 head, UDASS CNN); its settings come in ``hrda``.

DeepLabV2 options (both default to the DAFormer / mmseg model): ``resnet_style="caffe"`` builds the
DeepLab-v2 ResNet of ADVENT / DA-VSN / TPS (``src.models.backbones.resnet``: 7×7 stem, stride on the 1×1 conv,
full dilations, ceil-mode pool; the TPS checkpoints' architecture) and ``head_dilations`` the ASPP dilations
((6, 12) "dlv2red"; TPS's classifiers sum all four of (6, 12, 18, 24), video_uda.md §2.3).

``checkpoint_encoder=True`` turns on activation checkpointing per MiT block / ResNet stage in training
(``src.models.checkpointing``): less memory for about one extra encoder forward, the same gradients.

``pretrained``:
  * ``None``: random initialisation;
  * ``hf:<repo id>`` (e.g. ``hf:nvidia/mit-b5``), a Hugging Face model folder, a ``.safetensors`` or
    ``torch.save`` file: backbone weights loaded by name with :func:`load_backbone_weights` (SegFormer
    ``mit_bX.pth`` or the Hugging Face MiT layouts for MiT, timm ``resnet101c`` or open-mmlab
    ``resnet101_v1c`` for ResNet; :func:`src.models.pretrained.resolve_pretrained` turns the value into a
    file);
  * ``"timm"``: timm's hub ImageNet weights (ResNet only, needs internet; timm has no MiT);
  * ``"synthetic"``: the offline ImageNet stand-in of a MiT encoder (``src.models.synthetic_weights``),
    pre-trained once on procedural shapes and textures and cached under ``pretrained_dir``.
"""

from __future__ import annotations

import inspect
import logging

from torch import nn

from src.models.backbones import mix_transformer
from src.models.backbones.resnet import ResNetBackbone
from src.models.heads.daformer import DAFormerHead
from src.models.heads.deeplabv2 import DeepLabV2Head
from src.models.hrda import HRDASegmentor
from src.models.pretrained import WEIGHTS_HELP, load_backbone_weights
from src.models.segmentor import Segmentor
from src.models.synthetic_weights.pretrain import ensure_synthetic_weights

__all__ = ["create_segmentor", "create_backbone", "SEGMENTOR_NAMES", "HRDA_SEGMENTOR_NAMES", "BACKBONE_NAMES"]

log = logging.getLogger(__name__)

_MIT = {f"mit_b{i}": getattr(mix_transformer, f"mit_b{i}") for i in range(6)}
_RESNET_DEPTH = {"resnet101": 101, "resnet50": 50}

#: segmentor name -> (backbone name, head kind)
_SEGMENTORS: dict[str, tuple[str, str]] = {
    **{f"daformer_mitb{i}": (f"mit_b{i}", "daformer") for i in range(6)},
    "deeplabv2_r101": ("resnet101", "deeplabv2"),
    "deeplabv2_r50": ("resnet50", "deeplabv2"),
}
HRDA_PREFIX = "hrda_"
SEGMENTOR_NAMES: list[str] = list(_SEGMENTORS)
#: every plain segmentor wrapped in the HRDA host (src/models/hrda.py)
HRDA_SEGMENTOR_NAMES: list[str] = [HRDA_PREFIX + n for n in _SEGMENTORS]
BACKBONE_NAMES: list[str] = [*_MIT, *_RESNET_DEPTH]


def _backbone_name(name: str) -> str:
    name = name.removeprefix(HRDA_PREFIX)
    if name in _SEGMENTORS:
        return _SEGMENTORS[name][0]
    if name in _MIT or name in _RESNET_DEPTH:
        return name
    raise ValueError(f"Unknown model name '{name}'. Valid names: {SEGMENTOR_NAMES + BACKBONE_NAMES}")


def create_backbone(
    *,
    name: str,
    pretrained: str | None = None,
    drop_path_rate: float | None = None,
    pretrained_dir: str | None = None,
    resnet_style: str | None = None,
) -> nn.Module:
    """Backbone only (e.g. the frozen ImageNet encoder of the feature distance, daformer_mic.md §1.6).

    ``name`` is a segmentor name (its backbone is built) or a backbone name (``mit_b0``..``mit_b5``,
    ``resnet101``, ``resnet50``). ``pretrained_dir``: where ``pretrained="synthetic"`` is cached (default
    ``$DATA_ROOT/pretrained``; the UDA module passes ``${paths.data_dir}/pretrained``).
    """
    bb_name = _backbone_name(name)
    if resnet_style not in (None, "pytorch") and bb_name in _MIT:
        raise ValueError(f"model.resnet_style applies to ResNet (DeepLabV2) models only, not to '{name}'")
    if bb_name in _MIT:
        if pretrained == "timm":
            raise ValueError(
                f"pretrained='timm' is not available for {bb_name}: timm has no MiT (SegFormer) weights. "
                f"Use model.pretrained=hf:nvidia/mit-b{bb_name[-1]} or a local copy of it instead. "
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
            style=resnet_style or "pytorch",
        )
    if pretrained == "synthetic":
        if bb_name not in _MIT:
            raise ValueError(
                f"model.pretrained=synthetic: the offline stand-in exists for MiT encoders only, not "
                f"{bb_name}; pass real weights (model.pretrained=/path/to/weights or timm) or null"
            )
        pretrained = str(ensure_synthetic_weights(bb_name, pretrained_dir))
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
    checkpoint_encoder: bool = False,
    hrda: dict | None = None,
    pretrained_dir: str | None = None,
    resnet_style: str | None = None,
    head_dilations: tuple[int, ...] | list[int] | None = None,
) -> Segmentor:
    """Build a segmentor by name.

    Args:
        name: one of :data:`SEGMENTOR_NAMES`.
        num_classes: output classes (19 Cityscapes train ids).
        pretrained: None, "timm" (ResNet only), "synthetic" (MiT only, the offline stand-in cached in
            ``pretrained_dir``), or a value of ``resolve_pretrained`` (``hf:<repo>``, a Hugging Face folder,
            a weights file).
        head_channels: overrides ``embed_dim`` and ``channels`` of the DAFormer head (256 by default);
            meant for small CPU models. Not applicable to DeepLabV2 (ValueError).
        drop_path_rate: MiT stochastic depth (default 0.1) / timm ResNet drop path (default 0).
        checkpoint_encoder: activation checkpointing per MiT block / ResNet stage while training.
        hrda: keyword arguments of :class:`src.models.hrda.HRDASegmentor` (``lr_scale``, ``hr_crop_size``,
            ...) for an ``hrda_*`` name; None = its defaults (the paper's). Not accepted for other names.
        resnet_style: ``"pytorch"`` (default) or ``"caffe"`` (the TPS / ADVENT DeepLab ResNet); DeepLabV2
            only.
        head_dilations: ASPP dilations of the DeepLabV2 head (default (6, 12)); DeepLabV2 only.
    """
    if name not in SEGMENTOR_NAMES + HRDA_SEGMENTOR_NAMES:
        raise ValueError(
            f"Unknown segmentor name '{name}'. Valid names: {SEGMENTOR_NAMES}, or any of them with the HRDA "
            f"host: {HRDA_SEGMENTOR_NAMES}"
        )
    is_hrda = name.startswith(HRDA_PREFIX)
    if hrda is not None and not is_hrda:
        raise ValueError(
            f"model.hrda is set but model.name={name} is not an HRDA model: use model=hrda_{name} "
            f"(or drop model.hrda)"
        )
    bb_name, head_kind = _SEGMENTORS[name.removeprefix(HRDA_PREFIX)]
    if head_dilations is not None and head_kind != "deeplabv2":
        raise ValueError(f"model.head_dilations applies to DeepLabV2 heads only, not to '{name}'")
    backbone = create_backbone(name=bb_name, pretrained=pretrained, drop_path_rate=drop_path_rate,
                               pretrained_dir=pretrained_dir, resnet_style=resnet_style)  # fmt: skip
    if checkpoint_encoder:
        backbone.set_grad_checkpointing(True)  # type: ignore[operator]
    out_channels: list[int] = list(backbone.out_channels)  # type: ignore[arg-type]
    head: nn.Module
    if head_kind == "daformer":
        kw = {} if head_channels is None else {"embed_dim": head_channels, "channels": head_channels}
        head = DAFormerHead(in_channels=out_channels, num_classes=num_classes, **kw)
    else:
        if head_channels is not None:
            raise ValueError(f"head_channels applies to DAFormer heads only, not to '{name}'")
        kw = {} if head_dilations is None else {"dilations": tuple(int(d) for d in head_dilations)}
        head = DeepLabV2Head(in_channels=out_channels[-1], num_classes=num_classes, **kw)
    if not is_hrda:
        return Segmentor(backbone=backbone, head=head, num_classes=num_classes)
    return _wrap_hrda(backbone, head, head_kind, num_classes, dict(hrda or {}))


def _wrap_hrda(
    backbone: nn.Module, head: nn.Module, head_kind: str, num_classes: int, kw: dict
) -> HRDASegmentor:
    """HRDA host (daformer_mic.md §3): the scale-attention head and the output stride of the head kind."""
    allowed = set(inspect.signature(HRDASegmentor).parameters) - {
        "backbone", "head", "attention_head", "num_classes", "output_stride"
    }  # fmt: skip
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise ValueError(f"model.hrda: unknown keys {unknown}; valid keys: {sorted(allowed)}")
    classwise = bool(kw.get("attention_classwise", True))
    att_classes = num_classes if classwise else 1
    attention_head: nn.Module
    if head_kind == "daformer":
        # A second DAFormer head on the context features: same embedding width (256 in the paper), the
        # 1x1-conv fusion instead of the separable ASPP (HRDA's attention head, §3); output stride 4.
        attention_head = DAFormerHead(
            in_channels=head.in_channels, num_classes=att_classes, embed_dim=head.embed_dim,
            channels=head.channels, fusion="conv1",
        )  # fmt: skip
        output_stride = int(backbone.strides[0])  # type: ignore[index]
    else:
        # single_scale_head='DLV2Head': a second DeepLabV2 ASPP head (same dilations); output stride 8.
        attention_head = DeepLabV2Head(
            in_channels=head.in_channels, num_classes=att_classes, dilations=head.dilations
        )
        output_stride = int(backbone.strides[-1])  # type: ignore[index]
    return HRDASegmentor(
        backbone=backbone,
        head=head,
        attention_head=attention_head,
        num_classes=num_classes,
        output_stride=output_stride,
        **kw,
    )

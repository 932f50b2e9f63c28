"""Dilated ResNet backbone of DeepLabV2 (DACS / DAFormer CNN baseline), built with timm.

Reference (daformer_mic.md §4.3): mmseg ``ResNetV1c`` depth 101, i.e. a ResNet whose 7x7 stem is replaced by
a *deep stem* of three 3x3 convs (3->32 stride 2, 32->32, 32->64) followed by BN+ReLU and max-pool, with the
plain strided 1x1 shortcut (no average-pool "avg-down" shortcut). Dilations (1, 1, 2, 4) and strides
(1, 2, 1, 1) give output stride 8; ``contract_dilation=True`` makes the first block of a dilated stage use
half the stage dilation.

timm model choice (checked with ``timm.list_models('resnet101*')``): ``resnet101`` has the 7x7 stem,
``resnet101d`` has the deep stem *and* avg-down shortcuts (ResNet-D), ``resnet101s`` has a 64-64-128 deep
stem, and **``resnet101c``** has exactly the 32-32-64 deep stem with plain shortcuts = mmseg ResNetV1c. timm's
``output_stride=8`` turns the strides of layer3/layer4 into dilations 2/4 and gives the first block of each
dilated stage the previous dilation (1 and 2), which is mmseg's ``contract_dilation=True``.
BN layers are ordinary trainable BatchNorm2d in train mode (mmseg ``norm_eval=False``).

State-dict keys are exactly timm's (``conv1.0.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ...), so a timm
``resnet101c`` checkpoint loads by name; :meth:`ResNetBackbone.convert_state_dict` also maps the open-mmlab
``resnet101_v1c`` stem keys (``stem.{0,1,3,4,6,7}``) to timm's names.

``style="caffe"``: the DeepLab-v2 ResNet of ADVENT / DA-VSN / TPS (``ResNetMulti`` of TPS
``tps/model/accel_deeplabv2.py``, video_uda.md §2.3), whose weights the TPS checkpoints hold: the plain 7×7
stem (timm ``resnet101``, the same key names ``conv1``, ``bn1``, ``layerN.i.{conv,bn}{1,2,3}``,
``layerN.0.downsample.{0,1}``), the stride of a downsampling block on its first 1×1 conv (Caffe) instead of
the 3×3, every block of layer3 / layer4 at dilation 2 / 4 (no contracted first block) and a ``ceil_mode``
max-pool, which together give the reference's 65×129 logits for a 512×1024 input (timm's pytorch style:
64×128).
"""

from __future__ import annotations

import re

import timm
from torch import Tensor, nn

from src.models.checkpointing import checkpoint_call, use_checkpoint

__all__ = ["ResNetBackbone", "RESNET_MODELS"]

#: Accepted ``depth`` values -> timm model with the deep (ResNetV1c) stem.
RESNET_MODELS: dict[int, str] = {50: "resnet50c", 101: "resnet101c"}
#: ``style="caffe"``: the DeepLab-v2 / TPS ResNet (7x7 stem), module docstring
CAFFE_RESNET_MODELS: dict[int, str] = {50: "resnet50", 101: "resnet101"}
RESNET_STYLES = ("pytorch", "caffe")

# open-mmlab ResNetV1c stem (Sequential conv, bn, relu, conv, bn, relu, conv, bn, relu) -> timm names.
_MMSEG_STEM = {"0": "conv1.0", "1": "conv1.1", "3": "conv1.3", "4": "conv1.4", "6": "conv1.6", "7": "bn1"}


class ResNetBackbone(nn.Module):
    """ResNet-V1c with output stride 8 returning the 4 stage outputs (strides 4, 8, 8, 8).

    DeepLabV2 backbone of daformer_mic.md §4.3: ResNet-101 V1c (deep 3-conv stem), dilations (1, 1, 2, 4).

    Args:
        depth: 101 (reference) or 50; ignored when ``name`` is given.
        name: explicit timm model name (e.g. ``"resnet101c"``); must be a features-capable timm ResNet.
        output_stride: 8 as DeepLabV2 (16 or 32 also accepted by timm).
        pretrained: load timm's ImageNet weights from the hub at construction (needs internet);
            the default is random init, local weights are loaded by ``load_backbone_weights``.
        drop_path_rate: timm stochastic depth (0 in the reference).
        style: ``"pytorch"`` (ResNet-V1c, the DAFormer / mmseg DeepLabV2) or ``"caffe"`` (the DeepLab-v2
            ResNet of ADVENT / TPS, module docstring; output stride 8 only).

    Attributes:
        out_channels: [256, 512, 1024, 2048] for ResNet-50/101.
        strides: output strides of the 4 maps.
        grad_checkpointing: activation checkpointing per stage (``layer1..layer4``) in training
            (``set_grad_checkpointing``, ``model.checkpoint_encoder``; src/models/checkpointing.py).
    """

    def __init__(
        self,
        *,
        depth: int = 101,
        name: str | None = None,
        output_stride: int = 8,
        pretrained: bool = False,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
        style: str = "pytorch",
    ) -> None:
        super().__init__()
        if style not in RESNET_STYLES:
            raise ValueError(f"model.resnet_style must be one of {RESNET_STYLES}, got {style!r}")
        if style == "caffe" and output_stride != 8:
            raise ValueError(f"the caffe-style DeepLab ResNet has output stride 8, got {output_stride}")
        if name is None:
            models = CAFFE_RESNET_MODELS if style == "caffe" else RESNET_MODELS
            if depth not in models:
                raise ValueError(f"Unsupported ResNet depth {depth}; valid: {sorted(models)}")
            name = models[depth]
        self.style = style
        self.model_name = name
        net = timm.create_model(
            name,
            pretrained=pretrained,
            features_only=True,
            output_stride=output_stride,
            out_indices=(1, 2, 3, 4),
            drop_path_rate=drop_path_rate,
            in_chans=in_chans,
        )
        self.out_channels: list[int] = list(net.feature_info.channels())
        self.strides: list[int] = list(net.feature_info.reduction())
        # Register timm's modules (conv1, bn1, act1, maxpool, layer1..4) directly on this module so that the
        # state-dict keys are exactly those of the timm classification model.
        self._order: list[str] = []
        for mod_name, module in net.items():
            self.add_module(mod_name, module)
            self._order.append(mod_name)
        self._return_layers: list[str] = list(net.return_layers.keys())
        self.grad_checkpointing = False
        if style == "caffe":
            self._to_caffe_style()

    def _to_caffe_style(self) -> None:
        """Stride on the first 1x1 conv of a block, full dilation 2 / 4 in layer3 / layer4, ceil-mode pool."""
        self.maxpool.ceil_mode = True
        for layer, dilation in (("layer1", 1), ("layer2", 1), ("layer3", 2), ("layer4", 4)):
            for block in getattr(self, layer):
                if block.conv2.stride != (1, 1):
                    block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
                block.conv2.dilation = (dilation, dilation)
                block.conv2.padding = (dilation, dilation)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of each stage ``layer1..4`` in training (src/models/checkpointing.py)."""
        self.grad_checkpointing = bool(enable)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats: list[Tensor] = []
        ckpt = use_checkpoint(self, self.grad_checkpointing)
        for mod_name in self._order:
            mod = getattr(self, mod_name)
            x = checkpoint_call(mod, mod, x) if ckpt and mod_name.startswith("layer") else mod(x)
            if mod_name in self._return_layers:
                feats.append(x)
        return feats

    @staticmethod
    def convert_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map an open-mmlab ResNetV1c checkpoint (``stem.N.*``) to timm key names; timm keys pass through."""
        out: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            m = re.match(r"^stem\.(\d+)\.(.+)$", key)
            if m and m.group(1) in _MMSEG_STEM:
                key = f"{_MMSEG_STEM[m.group(1)]}.{m.group(2)}"
            out[key] = value
        return out

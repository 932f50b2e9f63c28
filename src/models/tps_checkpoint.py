"""The published TPS checkpoints (``tps_viper2city_pretrained.pth``, ``tps_syn2city_pretrained.pth``) -> our
two-frame DeepLabV2 (:func:`src.models.temporal_aggregation.create_temporal_segmentor`).

Layout (read from the public TPS repository, re-implemented here): TPS ``tps/model/accel_deeplabv2.py``
``get_accel_deeplab_v2`` builds ``ResNetMulti(Bottleneck, [3, 4, 23, 3], num_classes, multi_level=True)`` and
``tps/domain_adaptation/train_video_UDA.py`` saves ``torch.save(model.state_dict(), ...)``: a plain state dict
(no ``state_dict`` wrapper, no ``module.`` prefix; UDASS ``train_DAVSS_DSF_cd_ablation_31.py`` loads the file
with ``model_tps.load_state_dict(saved_state_dict)``, strict, into the same class). Its keys:

==========================================================  =============================================
TPS ``ResNetMulti``                                          ours (``TemporalSegmentor``)
==========================================================  =============================================
``conv1.weight``, ``bn1.*`` (7x7 stem)                       ``backbone.conv1.weight``, ``backbone.bn1.*``
``layer{1..4}.{i}.{conv1,conv2,conv3}.weight``,              ``backbone.layer{1..4}.{i}.*`` (the same names:
``layer{1..4}.{i}.{bn1,bn2,bn3}.*``,                         timm ``resnet101`` with ``style="caffe"``,
``layer{1..4}.0.downsample.{0,1}.*``                         src/models/backbones/resnet.py)
``layer5.conv2d_list.{0..3}.{weight,bias}`` (aux ASPP on     ``aux_head.aspp_modules.{0..3}.*``
layer3, dilations 6/12/18/24, summed)
``layer6.conv2d_list.{0..3}.{weight,bias}`` (main ASPP on    ``head.aspp_modules.{0..3}.*``
layer4, dilations 6/12/18/24, summed)
``sf_layer.weight`` (1x1 score fusion 2C -> C, no bias)      ``sf_layer.weight``
==========================================================  =============================================

BatchNorm buffers come along (``running_mean``, ``running_var``, ``num_batches_tracked``). The model is
``conf/uda/teacher/model/tps_accel_deeplabv2_r101.yaml``: ``resnet_style: caffe`` (stride on the 1x1 conv,
full dilations, ceil-mode pool: 65x129 logits for a 512x1024 input, as TPS), ``head_dilations`` and
``aux_dilations`` (6, 12, 18, 24) (TPS's ``ClassifierModule`` sums all four). UDASS's own CNN student adds a
``layer7`` ("proda") head that the TPS checkpoints do not hold; such keys are reported as unknown.

The TPS network reads ADVENT's input (video_uda.md §1.3): BGR, 0-255, minus the Caffe mean (104.007, 116.669,
122.679), no std. :func:`caffe_bgr_from_imagenet` turns our ImageNet-normalised RGB input into it (the
teacher's ``input_norm: caffe_bgr``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from src.data.transforms import MEAN, STD

__all__ = ["CAFFE_MEAN_BGR", "INPUT_NORMS", "is_tps_layout", "tps_to_ours", "caffe_bgr_from_imagenet"]

#: ADVENT / TPS ``IMG_MEAN`` (BGR, 0-255 scale), video_uda.md §1.3
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
#: the input normalisations a frozen teacher may expect: ours (ImageNet mean / std, RGB) or ADVENT's
INPUT_NORMS = ("imagenet", "caffe_bgr")

_RENAMES = (
    (re.compile(r"^(conv1|bn1|layer[1-4])\."), r"backbone.\1."),
    (re.compile(r"^layer5\.conv2d_list\.(\d+)\."), r"aux_head.aspp_modules.\1."),
    (re.compile(r"^layer6\.conv2d_list\.(\d+)\."), r"head.aspp_modules.\1."),
    (re.compile(r"^sf_layer\.weight$"), "sf_layer.weight"),
)
_MARKERS = ("conv1.weight", "layer6.conv2d_list.0.weight", "sf_layer.weight")


def _strip_module(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):  # saved from nn.DataParallel
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def is_tps_layout(state: Mapping[str, object]) -> bool:
    """Whether a state dict is a TPS ``ResNetMulti`` (module docstring)."""
    s = _strip_module({str(k): v for k, v in state.items()})  # type: ignore[misc]
    return all(k in s for k in _MARKERS)


def tps_to_ours(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """A TPS ``ResNetMulti`` state dict -> (our ``TemporalSegmentor`` keys, TPS keys with no counterpart)."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in _strip_module(state).items():
        for pattern, repl in _RENAMES:
            new, n = pattern.subn(repl, key)
            if n:
                out[new] = value
                break
        else:
            unknown.append(key)
    return out, sorted(unknown)


def caffe_bgr_from_imagenet(x: Tensor) -> Tensor:
    """ImageNet-normalised RGB (B,3,H,W) -> ADVENT's input: BGR, 0-255, minus the Caffe mean."""
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    caffe = torch.tensor(CAFFE_MEAN_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * std + mean).flip(1) - caffe

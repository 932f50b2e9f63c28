"""The released DAFormer / HRDA / MIC checkpoints (mmseg 0.16 layout) -> our segmentors' names.

Layout of the released files (DAFormer ``mmseg/models/uda/uda_decorator.py`` + ``dacs.py``, HRDA
``mmseg/models/decode_heads/hrda_head.py``, MIC ``seg/mmseg/models/uda/dacs.py``): an mmcv checkpoint
``{"meta": ..., "state_dict": ..., ["optimizer": ...]}`` whose ``state_dict`` holds the UDA model's segmentors
side by side, each an mmseg ``EncoderDecoder`` (``backbone.*``, ``decode_head.*``):

* ``model.*``: the student (``UDADecorator.model``);
* ``ema_model.*``: the EMA teacher (``DACS.ema_model``);
* ``imnet_model.*``: the frozen ImageNet model of the feature distance (a whole segmentor; only its backbone
  is used, ``DACS.calc_feat_dist``);
* MIC only, when its masking has a teacher of its own (``mask_alpha`` / ``mask_pseudo_threshold`` not 'same';
  never in the published configs): ``mic.teacher.*``, not used here.

Per segmentor, the key names of the heads are ours already (src/models/heads/daformer.py follows the DAFormer
release), only the module paths differ:

==========================================================  ==================================
mmseg (``EncoderDecoder`` / ``HRDAEncoderDecoder``)        ours (``Segmentor`` / ``HRDASegmentor``)
==========================================================  ==================================
``backbone.{patch_embed1..4, block1..4, norm1..4}.*``       ``backbone.*`` (the same names)
``decode_head.{embed_layers.{0..3}.proj, fuse_layer, ...}`` ``head.*`` (DAFormer host)
``decode_head.head.*`` (HRDA: the wrapped DAFormer head)    ``head.*``
``decode_head.scale_attention.*`` (HRDA: a DAFormer head    ``attention_head.*``
with ``fuse_layer`` a 1x1 ``ConvModule``, conv + bn)
==========================================================  ==================================

DAFormer head names (``DAFormerHead`` with ``ASPPWrapper``, sep=True, pool=False): ``embed_layers.{i}.proj``
(``MLP``, a Linear), ``fuse_layer.aspp_modules.0.{conv,bn}`` (1x1 ``ConvModule``),
``fuse_layer.aspp_modules.{1,2,3}.{depthwise_conv,pointwise_conv}.{conv,bn}`` (mmcv
``DepthwiseSeparableConvModule``), ``fuse_layer.bottleneck.{conv,bn}``, ``conv_seg``. The HRDA head's own
``conv_seg`` / ``dropout`` are deleted in its constructor, so ``decode_head.conv_seg`` only exists in the
DAFormer host. BN buffers (``running_mean``, ``running_var``, ``num_batches_tracked``) come along.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

__all__ = [
    "UDA_PARTS",
    "is_mmseg_layout",
    "split_uda_state",
    "to_our_segmentor",
    "ReleasedModel",
    "describe_segmentor",
]

#: the segmentors of an mmseg UDA checkpoint, by prefix
UDA_PARTS = ("model", "ema_model", "imnet_model")

#: mmseg module path -> ours, longest first (``decode_head.head.`` before ``decode_head.``)
_RENAMES = (
    ("decode_head.scale_attention.", "attention_head."),
    ("decode_head.head.", "head."),
    ("decode_head.", "head."),
    ("backbone.", "backbone."),
)

#: MiT variant by (stage-1 width, depths), daformer_mic.md §4.1 / src/models/backbones/mix_transformer.py
_MIT_BY_SHAPE = {
    (32, (2, 2, 2, 2)): "mitb0",
    (64, (2, 2, 2, 2)): "mitb1",
    (64, (3, 4, 6, 3)): "mitb2",
    (64, (3, 4, 18, 3)): "mitb3",
    (64, (3, 8, 27, 3)): "mitb4",
    (64, (3, 6, 40, 3)): "mitb5",
}


def _strip_module(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}


def is_mmseg_layout(state: Mapping[str, object]) -> bool:
    """True for an mmseg UDA state dict (``model.backbone.*``) or a plain mmseg segmentor's (``backbone.*``
    and ``decode_head.*``)."""
    keys = [k.removeprefix("module.") for k in state]
    if any(k.startswith("model.backbone.") for k in keys):
        return True
    return any(k.startswith("backbone.") for k in keys) and any(k.startswith("decode_head.") for k in keys)


def split_uda_state(state: Mapping[str, Tensor]) -> tuple[dict[str, dict[str, Tensor]], list[str]]:
    """An mmseg UDA state dict -> ({'model': {...}, 'ema_model': {...}, 'imnet_model': {...}}, ignored keys).

    Each part is a segmentor state dict without its prefix (parts absent from the file are absent here). A
    plain segmentor state dict (``backbone.*``, ``decode_head.*``, e.g. an mmseg test checkpoint) is the
    ``model`` part. Keys of no part (MIC's ``mic.teacher.*``, ...) are returned as ignored.
    """
    state = _strip_module(state)
    if not any(k.startswith("model.") for k in state):
        parts = {"model": {k: v for k, v in state.items() if k.startswith(("backbone.", "decode_head."))}}
        return parts, sorted(k for k in state if k not in parts["model"])
    parts: dict[str, dict[str, Tensor]] = {}
    ignored = []
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        if prefix in UDA_PARTS and rest:
            parts.setdefault(prefix, {})[rest] = value
        else:
            ignored.append(key)
    return parts, sorted(ignored)


def to_our_segmentor(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """One mmseg segmentor state dict -> (our Segmentor / HRDASegmentor state dict, keys of no module)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        for theirs, ours in _RENAMES:
            if key.startswith(theirs):
                out[ours + key[len(theirs) :]] = value
                break
        else:
            unknown.append(key)
    return out, sorted(unknown)


@dataclass(frozen=True)
class ReleasedModel:
    """What a released segmentor is, read from its tensors' shapes (so the mapping is width-agnostic)."""

    host: str  # "daformer" | "hrda"
    mit: str  # "mitb0" ... "mitb5"
    head_channels: int  # DAFormer head embed_dim = channels (256 in the releases)
    num_classes: int

    @property
    def model_name(self) -> str:
        """Our ``model.name``: ``daformer_mitb5`` or ``hrda_daformer_mitb5``."""
        name = f"daformer_{self.mit}"
        return f"hrda_{name}" if self.host == "hrda" else name


def describe_segmentor(state: Mapping[str, Tensor], *, where: str) -> ReleasedModel:
    """Host, MiT variant, head width and classes of one of *our* segmentor state dicts (after the renames).

    Raises:
        ValueError: not a MiT + DAFormer-head segmentor (one line naming ``where`` and the missing key).
    """

    def need(key: str) -> Tensor:
        if key not in state:
            raise ValueError(
                f"{where}: no {key}: not a MiT + DAFormer-head checkpoint of DAFormer / HRDA / MIC (the "
                f"ResNet / DeepLabV2 releases are not supported)"
            )
        return state[key]

    width = int(need("backbone.patch_embed1.proj.weight").shape[0])
    depths = tuple(
        1 + max((int(k.split(".")[2]) for k in state if k.startswith(f"backbone.block{i}.")), default=-1)
        for i in range(1, 5)
    )
    mit = _MIT_BY_SHAPE.get((width, depths))
    if mit is None:
        raise ValueError(
            f"{where}: a MiT with stage-1 width {width} and depths {list(depths)} is none of MiT-B0..B5"
        )
    embed = int(need("head.embed_layers.0.proj.weight").shape[0])
    classifier = need("head.conv_seg.weight")
    channels, num_classes = int(classifier.shape[1]), int(classifier.shape[0])
    if embed != channels:
        raise ValueError(
            f"{where}: DAFormer head with embed_dims {embed} != channels {channels}: our head uses one width "
            f"(model.head_channels)"
        )
    host = "hrda" if any(k.startswith("attention_head.") for k in state) else "daformer"
    return ReleasedModel(host=host, mit=mit, head_channels=channels, num_classes=num_classes)

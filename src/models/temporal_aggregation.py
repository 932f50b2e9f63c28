"""Flow-guided spatio-temporal aggregation: the two-frame ("ACCEL"-style) model around any segmentor.

Source: udass.md §2.5(a) (CNN student ``accel_deeplabv2_dsp_cd_DFF_gaijin.py``) and §2.5(b) (ViT student
``DAFormer_tps``), video_uda.md §2.3 ("ACCEL-style architecture in these repos"). One network ``f`` (any
segmentor of ``src.models``: DeepLabV2, MiT + DAFormer head) sees the current frame t and the previous
("key") frame t−1::

    z_t  = f(x_t)                            current-frame logits, with gradient
    z_k  = f(x_{t−1})   under no_grad        previous-frame logits, never a gradient
    ẑ_k  = warp(z_k, flow_{t→t−1})           moved onto frame t's grid (src.data.flow.warp: bilinear,
                                             border-clamped backward warp, the reference Resample2d)
    z    = SF([z_t, ẑ_k])                    SF = 1x1 conv 2C→C without bias, initialised to [I | 0]

so at initialisation the fused output *is* the current-frame output (the network starts as its
single-frame self and learns how much of the warped past to use). An optional auxiliary classifier
(``aux_head``, the CNN student's ``layer5``: DeepLabV2 ASPP with dilations 6/12/18/24 on layer3, udass.md
§2.5a) gets the same treatment with the same fusion layer: ``aux = SF([aux_t, warp(aux_{t−1})])``; the
video module adds ``uda.aux_weight`` (0.1) times its losses (udass.md §2.6.6). Warping happens at the logit
resolution (the flow is resized to it and its components scaled, video_uda.md §2.3).

``fusio`` (udass.md §2.5a, used for the QuadMix mixed clips): all maps are first upsampled to the input
resolution, warped there, and inside the pasted long-tail mask M (objects pasted identically into both
frames: static copies, so the flow there is meaningless) the warped key-frame map is replaced by the
current-frame map: ``z = SF([z_t, ẑ_k·(1−M) + z_t·M])``. Upsampling is bilinear, with ``align_corners=False``
like ``Segmentor.predict`` unless the caller passes ``align_corners=True`` (the video references' ADVENT
``nn.Upsample``; the video module's ``uda.align_corners``).

The same fused output is used at training and at test time (video_uda.md §2.3: "val also needs the t→t−1
flow and frame t−1"). The reference's main CNN classifier is a "proda" head started at random over a TPS
checkpoint; ours is the DeepLabV2 host's, and the ViT student (like the reference's) has no aux branch.

The fusion layer is named ``sf_layer`` (the reference name): ``src.optim.param_groups`` puts it into its
own parameter group ``fusion`` with ``lr × fusion_lr_mult`` (udass.md §2.5a: backbone lr, sf_layer lr,
classifiers 10×lr; the ADVENT schedule quirk of video_uda.md §2.3 actually runs it at 10× lr).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.data.flow import warp
from src.models.factory import SEGMENTOR_NAMES, create_segmentor
from src.models.heads.deeplabv2 import DeepLabV2Head
from src.models.segmentor import Segmentor

__all__ = ["ClipLogits", "TemporalSegmentor", "create_temporal_segmentor", "TEMPORAL_PREFIX"]

#: model names ``accel_<segmentor name>`` build the two-frame model around ``<segmentor name>``
TEMPORAL_PREFIX = "accel_"


class ClipLogits(NamedTuple):
    """Outputs of one two-frame forward, all at the same resolution (head's, or the input's with fusio)."""

    fused: Tensor  # SF([current, previous]) (B,C,h,w), the prediction
    current: Tensor  # current-frame logits (with gradient)
    previous: Tensor  # warped previous-frame logits (no gradient; inside a fusio mask: the current ones)
    aux: Tensor | None = None  # SF([aux current, warped aux previous]) of the auxiliary classifier, if any
    feats: list[Tensor] | None = None  # the current frame's backbone features (``return_feat=True``)


class TemporalSegmentor(Segmentor):
    """A segmentor with flow-guided score fusion of the previous frame (udass.md §2.5a-b).

    Single-frame calls (``forward``, ``predict``, ``extract_feat``) are those of :class:`Segmentor`, so image
    code (panels, prediction on still images) keeps working; two-frame calls are :meth:`forward_clip` and
    :meth:`predict_clip`. State-dict keys are the segmentor's plus ``sf_layer.weight``.

    Args:
        backbone, head, num_classes: as :class:`Segmentor`.
        fusion_lr_mult: learning-rate multiplier of the fusion layer's parameter group (``src.optim``).
        aux_head: optional auxiliary classifier on the backbone features (udass.md §2.5a ``layer5``); its
            name contains ``head``, so it gets the heads' 10x learning rate.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        num_classes: int,
        fusion_lr_mult: float = 1.0,
        aux_head: nn.Module | None = None,
    ) -> None:
        super().__init__(backbone=backbone, head=head, num_classes=num_classes)
        self.aux_head = aux_head
        if fusion_lr_mult < 0:
            raise ValueError(f"fusion_lr_mult must be >= 0, got {fusion_lr_mult}")
        self.fusion_lr_mult = float(fusion_lr_mult)
        self.sf_layer = nn.Conv2d(2 * num_classes, num_classes, kernel_size=1, bias=False)
        self.reset_fusion()

    @classmethod
    def from_segmentor(
        cls, segmentor: Segmentor, *, fusion_lr_mult: float = 1.0, aux_head: nn.Module | None = None
    ) -> TemporalSegmentor:
        """Wrap a built segmentor (its backbone and head modules are shared, not copied)."""
        return cls(
            backbone=segmentor.backbone,
            head=segmentor.head,
            num_classes=segmentor.num_classes,
            fusion_lr_mult=fusion_lr_mult,
            aux_head=aux_head,
        )

    @torch.no_grad()
    def reset_fusion(self) -> None:
        """[I | 0]: the fused output equals the current-frame logits (udass.md §2.5a)."""
        c = self.num_classes
        w = torch.zeros(c, 2 * c, 1, 1)
        w[torch.arange(c), torch.arange(c)] = 1.0
        self.sf_layer.weight.copy_(w)

    def fuse(self, current: Tensor, previous: Tensor) -> Tensor:
        """SF([current, previous]) with the 1x1 fusion conv."""
        if current.shape != previous.shape:
            raise ValueError(f"fuse: current {tuple(current.shape)} != previous {tuple(previous.shape)}")
        return self.sf_layer(torch.cat([current, previous.to(current.dtype)], dim=1))

    def forward_clip(
        self,
        x: Tensor,
        x_prev: Tensor,
        flow: Tensor,
        *,
        fusio_mask: Tensor | None = None,
        return_feat: bool = False,
        align_corners: bool = False,
    ) -> ClipLogits:
        """Two-frame forward: x, x_prev (B,3,H,W), backward flow t→t−1 (B,2,H',W') at any resolution.

        ``fusio_mask`` (B,1,H,W) or (B,H,W), {0,1} at the input resolution: fusio mode (see the module
        docstring); the outputs are then at the input resolution, else at the head's. ``return_feat``: also
        return the current frame's backbone features (the ImageNet feature distance trains on them).
        ``align_corners``: of the fusio upsampling.
        """
        if x.shape != x_prev.shape:
            raise ValueError(f"forward_clip: frame t {tuple(x.shape)} and t-1 {tuple(x_prev.shape)} differ")
        if flow.dim() != 4 or flow.shape[0] != x.shape[0] or flow.shape[1] != 2:
            raise ValueError(
                f"forward_clip: flow must be (B,2,H,W) for B={x.shape[0]}, got {tuple(flow.shape)}"
            )
        feats = self.extract_feat(x)
        current = self.decode(feats)
        current_aux = None if self.aux_head is None else self.aux_head(feats)
        with torch.no_grad():  # the key frame never receives a gradient (udass.md §2.5a)
            previous, previous_aux = self._frame_logits(x_prev)
        m = None
        if fusio_mask is not None:
            m = fusio_mask.unsqueeze(1) if fusio_mask.dim() == 3 else fusio_mask
            if tuple(m.shape[-2:]) != tuple(x.shape[-2:]):
                raise ValueError(f"fusio_mask is {tuple(m.shape[-2:])}, the frames {tuple(x.shape[-2:])}")
        current, warped = self._warp_previous(current, previous, flow, m, align_corners)
        aux = None
        if current_aux is not None:
            aux = self.fuse(*self._warp_previous(current_aux, previous_aux, flow, m, align_corners))
        return ClipLogits(fused=self.fuse(current, warped), current=current, previous=warped, aux=aux,
                          feats=feats if return_feat else None)  # fmt: skip

    def _frame_logits(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Main and (if any) auxiliary logits of one frame, from one backbone pass."""
        feats = self.extract_feat(x)
        return self.decode(feats), (None if self.aux_head is None else self.aux_head(feats))

    @staticmethod
    def _warp_previous(
        current: Tensor, previous: Tensor, flow: Tensor, m: Tensor | None, align_corners: bool = False
    ) -> tuple[Tensor, Tensor]:
        """(current, warped previous) at the head's resolution, or in fusio mode (mask m) at m's."""
        if m is None:
            return current, warp(previous, flow)
        size = m.shape[-2:]
        current = F.interpolate(current, size=size, mode="bilinear", align_corners=align_corners)
        previous = F.interpolate(previous, size=size, mode="bilinear", align_corners=align_corners)
        m = m.to(device=current.device, dtype=current.dtype)
        return current, warp(previous, flow).to(current.dtype) * (1.0 - m) + current * m

    def predict_clip(
        self, x: Tensor, x_prev: Tensor, flow: Tensor, *, size=None, align_corners: bool = False
    ) -> Tensor:
        """Fused logits bilinearly upsampled to ``size`` (default the input's H, W), ``align_corners=False``
        like ``predict`` (``True``: the video references' evaluation, udass.md §2.8)."""
        logits = self.forward_clip(x, x_prev, flow).fused
        size = tuple(x.shape[-2:]) if size is None else tuple(int(s) for s in size)
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
        return logits


class ClipPredictor:
    """``predict(z)`` on the channel-stack z = [x_t (3), x_{t−1} (3), flow (2)] (B,8,H,W).

    Lets the whole / sliding-window inference of ``src.models.inference`` run two-frame models unchanged:
    a window crops both frames and the flow together (flows are in pixels, a crop keeps them valid;
    samples outside a window are border-clamped, as at the image border). ``align_corners``: of the upsampling
    of the fused logits (:meth:`TemporalSegmentor.predict_clip`); :meth:`predict_at` upsamples once, straight
    to the label size (the references' evaluation: 65×129 logits to 2048×1024, udass.md §2.8).
    """

    def __init__(self, model: TemporalSegmentor, *, align_corners: bool = False) -> None:
        self.model = model
        self.align_corners = bool(align_corners)

    @staticmethod
    def stack(x: Tensor, x_prev: Tensor, flow: Tensor) -> Tensor:
        if flow.shape[-2:] != x.shape[-2:]:
            from src.data.flow import resize_flow

            flow = resize_flow(flow, x.shape[-2:])
        return torch.cat([x, x_prev, flow.to(x.dtype)], dim=1)

    def predict(self, z: Tensor) -> Tensor:
        return self.predict_at(z, None)

    def predict_at(self, z: Tensor, size) -> Tensor:
        """The fused logits of the stack z upsampled once to ``size`` (None: z's size)."""
        if z.shape[1] != 8:
            raise ValueError(
                f"ClipPredictor expects (B,8,H,W) = frame t, frame t-1, flow; got {tuple(z.shape)}"
            )
        x, x_prev, flow = z[:, :3], z[:, 3:6], z[:, 6:8]
        return self.model.predict_clip(x, x_prev, flow, size=size, align_corners=self.align_corners)


def create_temporal_segmentor(
    *,
    name: str,
    num_classes: int = 19,
    pretrained: str | None = None,
    head_channels: int | None = None,
    drop_path_rate: float | None = None,
    checkpoint_encoder: bool = False,
    fusion_lr_mult: float = 1.0,
    aux_head: bool = False,
    aux_dilations: tuple[int, ...] = (6, 12, 18, 24),
    pretrained_dir: str | None = None,
    resnet_style: str | None = None,
    head_dilations: tuple[int, ...] | None = None,
) -> TemporalSegmentor:
    """The two-frame model around a segmentor of :func:`src.models.factory.create_segmentor`.

    ``name``: ``accel_<segmentor>`` (``accel_daformer_mitb5``, ``accel_deeplabv2_r101``, ...) or a plain
    segmentor name (not an ``hrda_*`` one: the HRDA host has its own multi-resolution forward); the other
    arguments are those of ``create_segmentor`` plus ``fusion_lr_mult`` and ``aux_head`` (DeepLabV2 only: the
    CNN student's layer3 classifier, an ASPP sum with ``aux_dilations``, udass.md §2.5a).
    ``resnet_style="caffe"`` with ``head_dilations=(6, 12, 18, 24)`` and the aux head is the TPS
    ACCEL-DeepLabv2 (the architecture of ``tps_{viper,syn}2city_pretrained.pth``,
    src/models/tps_checkpoint.py).
    """
    inner = name[len(TEMPORAL_PREFIX) :] if name.startswith(TEMPORAL_PREFIX) else name
    if inner not in SEGMENTOR_NAMES or inner.startswith("hrda_"):
        valid = [TEMPORAL_PREFIX + n for n in SEGMENTOR_NAMES if not n.startswith("hrda_")]
        raise ValueError(f"Unknown two-frame model name '{name}' (model.name). Valid names: {valid}")
    seg = create_segmentor(
        name=inner,
        num_classes=num_classes,
        pretrained=pretrained,
        head_channels=head_channels,
        drop_path_rate=drop_path_rate,
        checkpoint_encoder=checkpoint_encoder,
        pretrained_dir=pretrained_dir,
        resnet_style=resnet_style,
        head_dilations=head_dilations,
    )
    aux: nn.Module | None = None
    if aux_head:
        if not inner.startswith("deeplabv2_"):
            raise ValueError(
                f"model.aux_head=true: the auxiliary layer3 classifier is the CNN student's (udass.md "
                f"§2.5a); {name} has none (the reference ViT student has no aux branch either): set "
                f"model.aux_head=false"
            )
        channels = list(seg.backbone.out_channels)  # type: ignore[arg-type]
        aux = DeepLabV2Head(
            in_channels=channels[-2], num_classes=num_classes, dilations=tuple(aux_dilations), in_index=-2
        )
    return TemporalSegmentor.from_segmentor(seg, fusion_lr_mult=fusion_lr_mult, aux_head=aux)

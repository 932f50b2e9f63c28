"""HRDA multi-resolution segmentor: context view + detail crop, class-wise scale attention, fused output.

Source: HRDA ``hrda_encoder_decoder.py`` / ``hrda_head.py`` (config ``gtaHR2csHR_hrda.py``, used unchanged by
MIC(HRDA) and UDASS), daformer_mic.md §3 (with §1.5-§1.7, §2, §5) and udass.md §1.1, §1.5. Every HRDA rule of
the library lives in this file; any encoder/decoder pair of ``src.models.factory`` is wrapped.

Training forward (one training crop x of H x W, 1024 x 1024 in the paper):

- **Scales** [1, ``lr_scale``] with ``lr_scale`` = 0.5. **Context**: the whole crop bilinearly resized by 0.5
  (align_corners=False) -> encoder -> head -> ``lr`` logits at the head's output stride ``os`` of the
  context (os 4 for DAFormer: 128 x 128; 8 for DeepLabV2).
- **Detail**: an ``hr_crop_size`` (512 x 512) crop of the full-resolution x -> the *same* encoder and head ->
  ``hr`` logits (128 x 128). Offsets are multiples of ``crop_coord_divisible`` (8), drawn as the reference
  ``get_crop_bbox``: ``randint(0, (H - h + 1) // d) * d``, so the box never quite reaches the far border
  when H - h is a multiple of d (kept). **One box per batch, re-drawn at every training forward** (source,
  mixed and masked passes each get their own).
- **Scale attention** ``a = sigmoid(attention_head(context features))``: a second head on the context
  features, class-wise (``attention_classwise``, C channels; 1 channel otherwise). DAFormer host: a DAFormer
  head with the ``conv1`` fusion (256-d embeddings, one 1x1 conv + BN + ReLU, no ASPP); DeepLabV2 host
  (``single_scale_head='DLV2Head'``): a second DeepLabV2 ASPP head. In training ``a`` is 0 outside the detail
  box, the box scaled to context-output coordinates (``box // (os / lr_scale)``, floored as the reference).
- **Fusion** at stride ``os`` of the full-resolution crop (256 x 256):
  ``fused = up((1 - a) * lr) + up(a) * hr_inserted`` with ``up`` bilinear x(1 / lr_scale) and ``hr_inserted``
  the detail logits pasted into a zero canvas at ``box // os``.
- **Loss** (``seg_loss``): ``(1 - hr_w - lr_w) * CE(fused, y, w) + hr_w * CE(hr, crop(y), crop(w))
  [+ lr_w * CE((1 - a) * lr, y, w)]`` with ``hr_loss_weight`` 0.1 and ``lr_loss_weight`` 0, i.e.
  0.9 fused + 0.1 detail (the reference scales the fused term by 1 - 0.1, §3); the pixel-weight map is
  cropped like the label. CE is the caller's ``loss_fn`` (the mmseg reduction of ``src.models.losses``).
  MIC's ``mask_lambda`` multiplies the whole HRDA loss here (the reference scales only the fused term when
  it is not 1, §2; it is 1 in every published config).

Inference (``predict``: teacher pseudo-labels, validation and test windows):

- context = the whole input at 0.5; detail = **overlapping sliding windows** of ``hr_crop_size`` with stride
  ``hr_slide_stride`` (default half the window: ``hr_slide_overlapping``; 9 windows of 512 at stride 256 in a
  1024 input), batched through the encoder, their logits averaged where they overlap; fused with the
  *unmasked* attention; logits bilinearly upsampled to the input size. ``hr_slide_inference=false`` runs the
  detail branch on the whole full-resolution input instead.
- The test-time outer sliding window (1024 windows, stride 512, batched, on the 2048 x 1024 image, §3) is
  ``src.models.inference.slide_inference`` (``eval.mode=slide``), which calls this ``predict`` per window.
- Inputs whose sides are not multiples of ``os / lr_scale`` (8; 16 for DeepLabV2) are bilinearly resized up
  to the next multiple and the logits back (our addition: the reference only sees 1024 windows).

Features for the feature distance (FD, §1.6; OMUDA FDM): the **context** features (``feature_scale`` 0.5);
``feature_input(x)`` is the context view, so the frozen ImageNet encoder sees the same 0.5-scale image, and
the thing-class mask is downscaled by W_label / W_feat = 64 (§1.6).

QuadMix feature-level mixing: ``embed`` draws one detail box for all samples of the call (their embeddings
must align), ``blend`` mixes the context embeddings over the region and the detail embeddings over the region
cropped to the box, ``embedding_loss`` classifies, fuses and applies the HRDA loss.

Parameters: the attention head's name contains "head", so it gets the head learning rate x10 (the reference's
``scale_attention`` lives inside ``decode_head``, §5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.inference import slide_windows, windows_cover
from src.models.losses import weighted_cross_entropy
from src.models.segmentor import BlendFn, LossFn, Segmentor

__all__ = [
    "HRDASegmentor",
    "HRDAEmbedding",
    "Box",
    "detail_crop_box",
    "crop",
    "box_slices",
    "fuse",
    "hr_slide_logits",
]

#: (y1, y2, x1, x2) in pixels of the full-resolution input
Box = tuple[int, int, int, int]


def detail_crop_box(
    height: int,
    width: int,
    crop_size: Sequence[int],
    divisible: int = 8,
    *,
    generator: torch.Generator | None = None,
) -> Box:
    """Random detail-crop box (reference ``get_crop_bbox``, daformer_mic.md §3).

    Offsets ``randint(0, (L - c + 1) // divisible) * divisible`` per axis (at least one choice: 0); a crop
    larger than the input is clipped to it. ``generator`` = None uses the global random stream (re-seeded
    every training step by the UDA module, so runs and resumes are exact).
    """
    ch, cw = min(int(crop_size[0]), height), min(int(crop_size[1]), width)
    if (ch, cw) == (height, width):
        return (0, height, 0, width)
    n_h = max((height - ch + 1) // divisible, 1)
    n_w = max((width - cw + 1) // divisible, 1)
    draw = torch.randint(0, n_h * n_w, (1,), generator=generator).item()
    y1, x1 = (draw // n_w) * divisible, (draw % n_w) * divisible
    return (y1, y1 + ch, x1, x1 + cw)


def crop(t: Tensor, box: Box) -> Tensor:
    """``t[..., y1:y2, x1:x2]`` (images, labels, weight maps, regions)."""
    y1, y2, x1, x2 = box
    return t[..., y1:y2, x1:x2]


def box_slices(box: Box, stride: int) -> tuple[slice, slice]:
    """The box at ``1 / stride`` resolution, floored as the reference ``hr_crop_slice``."""
    y1, y2, x1, x2 = box
    return slice(y1 // stride, y2 // stride), slice(x1 // stride, x2 // stride)


def _resize(t: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)


def fuse(
    lr: Tensor,
    hr: Tensor,
    attention: Tensor,
    *,
    size: Sequence[int],
    box: Box | None = None,
    output_stride: int = 4,
    lr_scale: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """HRDA fusion (daformer_mic.md §3) -> (fused logits at ``size``, the attention-weighted context logits).

    Args:
        lr: context logits (B, C, h, w) at stride ``output_stride`` of the context view.
        hr: detail logits: (B, C, ...) of the box at stride ``output_stride`` (training), or covering the
            whole input at ``size`` (inference, ``box=None``).
        attention: (B, C or 1, h, w) in [0, 1] at the context-output resolution.
        size: (H / os, W / os), the fused output of the full-resolution input.
        box: the detail box (full-resolution pixels); training only. The attention is zeroed outside it and
            the detail logits are pasted into a zero canvas there.
    """
    if box is not None:
        mask = torch.zeros_like(attention[:, :1])
        sy, sx = box_slices(box, round(output_stride / lr_scale))
        mask[:, :, sy, sx] = 1
        attention = attention * mask
    lr_weighted = (1 - attention) * lr
    up_lr = _resize(lr_weighted, size)
    up_att = _resize(attention, size)
    if box is not None:
        sy, sx = box_slices(box, output_stride)
        if (sy.stop - sy.start, sx.stop - sx.start) != tuple(hr.shape[-2:]):
            raise ValueError(
                f"detail logits {tuple(hr.shape[-2:])} do not fill the box {box} at stride {output_stride}"
            )
        hr_inserted = torch.zeros_like(up_lr)
        hr_inserted[:, :, sy, sx] = hr.to(hr_inserted.dtype)
    else:
        if tuple(hr.shape[-2:]) != tuple(size):
            raise ValueError(f"detail logits {tuple(hr.shape[-2:])} do not cover the output {tuple(size)}")
        hr_inserted = hr
    return up_att * hr_inserted + up_lr, lr_weighted


def hr_slide_logits(
    model: Segmentor,
    x: Tensor,
    *,
    crop_size: Sequence[int],
    stride: Sequence[int],
    output_stride: int,
) -> Tensor:
    """Detail logits of x from overlapping windows (reference ``extract_slide_feat`` + ``decode_hr``).

    All windows of the batch go through the encoder and head in one forward; their logits (stride
    ``output_stride``) are summed into a canvas of (H / os, W / os) at ``box // os`` and divided by the number
    of windows covering each cell.
    """
    b, _, h, w = x.shape
    boxes = slide_windows(h, w, crop_size=tuple(crop_size), stride=tuple(stride))
    crops = torch.stack([crop(x, bx) for bx in boxes]).flatten(0, 1)  # window-major, as the reference's cat
    logits = model.decode(model.extract_feat(crops)).unflatten(0, (len(boxes), -1))
    canvas = x.new_zeros((b, logits.shape[2], h // output_stride, w // output_stride), dtype=torch.float32)
    count = x.new_zeros((1, 1, h // output_stride, w // output_stride), dtype=torch.float32)
    # cannot happen with slide_windows; never divide by zero silently (checked on the boxes: no tensor branch)
    if not windows_cover([(y1 // output_stride, y2 // output_stride, x1 // output_stride, x2 // output_stride)
                          for y1, y2, x1, x2 in boxes], h // output_stride, w // output_stride):  # fmt: skip
        raise RuntimeError("HRDA detail windows do not cover the image")
    for i, bx in enumerate(boxes):
        sy, sx = box_slices(bx, output_stride)
        canvas[:, :, sy, sx] += logits[i].float()
        count[:, :, sy, sx] += 1
    return canvas / count


@dataclass
class HRDAEmbedding:
    """Decoder embeddings of one training forward: context and detail, the context features, the box."""

    lr: Tensor
    hr: Tensor
    lr_feats: list[Tensor]
    box: Box
    size: tuple[int, int]  # (H, W) of the full-resolution input


class HRDASegmentor(Segmentor):
    """HRDA wrapper around an encoder/decoder (daformer_mic.md §3; the module docstring has every rule).

    Args:
        backbone, head: the shared encoder and decoder (``head`` has ``forward_embedding`` / ``classify``).
        attention_head: the scale-attention head on the context features (``num_classes`` outputs if
            ``attention_classwise``, else 1); sigmoid applied here.
        num_classes: output classes.
        output_stride: stride of the head's logits (4 DAFormer, 8 DeepLabV2).
        lr_scale: context scale (0.5).
        hr_crop_size: detail crop (h, w) in full-resolution pixels (512, 512).
        crop_coord_divisible: detail-box offsets are multiples of this (8); a multiple of ``output_stride``.
        hr_loss_weight: weight of the detail loss (0.1); the fused loss gets 1 - hr - lr.
        lr_loss_weight: weight of a context loss (0).
        hr_slide_inference: detail logits from sliding windows at inference (True), else one whole pass.
        hr_slide_stride: (h, w) stride of those windows; None = half the detail crop (overlapping).
        attention_classwise: one attention map per class (True) or one for all (False).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        attention_head: nn.Module,
        num_classes: int,
        output_stride: int,
        lr_scale: float = 0.5,
        hr_crop_size: Sequence[int] = (512, 512),
        crop_coord_divisible: int = 8,
        hr_loss_weight: float = 0.1,
        lr_loss_weight: float = 0.0,
        hr_slide_inference: bool = True,
        hr_slide_stride: Sequence[int] | None = None,
        attention_classwise: bool = True,
    ) -> None:
        super().__init__(backbone=backbone, head=head, num_classes=num_classes)
        key = "model.hrda"
        if not 0.0 < lr_scale <= 1.0:
            raise ValueError(f"{key}.lr_scale must be in (0, 1] (HRDA: 0.5), got {lr_scale}")
        ratio = output_stride / lr_scale
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"{key}.lr_scale={lr_scale}: output stride {output_stride} / lr_scale must be an integer "
                "(use 0.5 or 0.25)"
            )
        hr_crop = tuple(int(v) for v in hr_crop_size)
        if len(hr_crop) != 2 or min(hr_crop) <= 0 or any(v % output_stride for v in hr_crop):
            raise ValueError(
                f"{key}.hr_crop_size={list(hr_crop_size)} must be 2 positive multiples of the head's output "
                f"stride {output_stride}"
            )
        if crop_coord_divisible <= 0 or crop_coord_divisible % output_stride:
            raise ValueError(
                f"{key}.crop_coord_divisible={crop_coord_divisible} must be a positive multiple of the "
                f"head's output stride {output_stride}, so that the detail logits land on whole output cells "
                "(HRDA: 8)"
            )
        stride = tuple(int(v) for v in hr_slide_stride) if hr_slide_stride is not None else None
        if stride is None:
            stride = tuple(v // 2 for v in hr_crop)
        if len(stride) != 2 or min(stride) <= 0 or any(v % output_stride for v in stride):
            raise ValueError(
                f"{key}.hr_slide_stride={list(stride)} must be 2 positive multiples of the head's output "
                f"stride {output_stride} (null = half the detail crop)"
            )
        if hr_loss_weight < 0 or lr_loss_weight < 0 or hr_loss_weight + lr_loss_weight > 1:
            raise ValueError(
                f"{key}.hr_loss_weight={hr_loss_weight} and lr_loss_weight={lr_loss_weight} must be >= 0 and "
                "sum to at most 1 (HRDA: 0.1 and 0)"
            )
        att_out = getattr(attention_head, "num_classes", None)
        expected = num_classes if attention_classwise else 1
        if att_out is not None and att_out != expected:
            raise ValueError(f"attention head has {att_out} outputs, expected {expected}")
        self.attention_head = attention_head
        self.output_stride = int(output_stride)
        self.lr_scale = float(lr_scale)
        self.hr_crop_size: tuple[int, int] = hr_crop  # type: ignore[assignment]
        self.crop_coord_divisible = int(crop_coord_divisible)
        self.hr_loss_weight = float(hr_loss_weight)
        self.lr_loss_weight = float(lr_loss_weight)
        self.hr_slide_inference = bool(hr_slide_inference)
        self.hr_slide_stride: tuple[int, int] = stride  # type: ignore[assignment]
        self.attention_classwise = bool(attention_classwise)
        #: input sides must be multiples of this (context view -> whole output cells): os / lr_scale
        self.size_divisor = round(ratio)

    # ------------------------------------------------------------------ parts
    def context_view(self, x: Tensor) -> Tensor:
        """The context (low-resolution) view: x bilinearly resized by ``lr_scale`` (align_corners=False)."""
        if self.lr_scale == 1.0:
            return x
        return F.interpolate(x, scale_factor=self.lr_scale, mode="bilinear", align_corners=False)

    def feature_input(self, x: Tensor) -> Tensor:
        """FD / FDM compare the context features: the image they come from is the context view."""
        return self.context_view(x)

    def attention(self, lr_feats: list[Tensor]) -> Tensor:
        """Scale attention in [0, 1] at the context-output resolution (B, C or 1, h, w)."""
        return torch.sigmoid(self.attention_head(lr_feats))

    def out_size(self, x: Tensor) -> tuple[int, int]:
        """Size of the fused logits: the full-resolution input at the head's output stride."""
        h, w = x.shape[-2:]
        self._check_size(h, w)
        return h // self.output_stride, w // self.output_stride

    def _check_size(self, h: int, w: int) -> None:
        m = self.size_divisor
        if h % m or w % m:
            raise ValueError(
                f"HRDA training input {h}x{w}: both sides must be multiples of {m} (output stride "
                f"{self.output_stride} / lr_scale {self.lr_scale}); set data.crop_size accordingly"
            )

    def draw_box(self, x: Tensor) -> Box:
        """A detail box for this training forward (shared by the whole batch)."""
        h, w = x.shape[-2:]
        return detail_crop_box(h, w, self.hr_crop_size, self.crop_coord_divisible)

    # ------------------------------------------------------------------ training
    def embed(self, xs: Sequence[Tensor]) -> list[HRDAEmbedding]:  # type: ignore[override]
        """Context and detail embeddings of training inputs; one detail box for all of them."""
        if not xs:
            return []
        shape = tuple(xs[0].shape[-2:])
        if any(tuple(x.shape[-2:]) != shape for x in xs):
            raise ValueError(f"HRDA embed: inputs differ in size {[tuple(x.shape[-2:]) for x in xs]}")
        self._check_size(*shape)
        box = self.draw_box(xs[0])
        out = []
        for x in xs:
            lr_feats = self.extract_feat(self.context_view(x))
            hr_feats = self.extract_feat(crop(x, box))
            out.append(
                HRDAEmbedding(
                    lr=self.head.forward_embedding(lr_feats),
                    hr=self.head.forward_embedding(hr_feats),
                    lr_feats=lr_feats,
                    box=box,
                    size=shape,  # type: ignore[arg-type]
                )
            )
        return out

    def blend(self, emb: HRDAEmbedding, other: HRDAEmbedding, region: Tensor, fn: BlendFn) -> HRDAEmbedding:  # type: ignore[override]
        """Mix two embeddings of one ``embed`` call: context over ``region``, detail over the region's box."""
        if emb.box != other.box:
            raise ValueError("HRDA blend: embeddings from different detail boxes (embed them in one call)")
        if region.dim() == 3:
            region = region.unsqueeze(1)
        return replace(emb, lr=fn(emb.lr, other.lr, region), hr=fn(emb.hr, other.hr, crop(region, emb.box)))

    def logits(self, emb: HRDAEmbedding) -> tuple[Tensor, Tensor, Tensor]:
        """(fused, detail, attention-weighted context) logits of a training embedding."""
        lr = self.head.classify(emb.lr)
        hr = self.head.classify(emb.hr)
        att = self.attention(emb.lr_feats)
        size = (emb.size[0] // self.output_stride, emb.size[1] // self.output_stride)
        fused, lr_weighted = fuse(
            lr, hr, att, size=size, box=emb.box, output_stride=self.output_stride, lr_scale=self.lr_scale
        )
        return fused, hr, lr_weighted

    def embedding_loss(  # type: ignore[override]
        self,
        emb: HRDAEmbedding,
        y: Tensor,
        w: Tensor | None = None,
        *,
        loss_fn: LossFn = weighted_cross_entropy,
    ) -> Tensor:
        """(1 - hr_w - lr_w) CE(fused, y, w) + hr_w CE(detail, crop(y), crop(w)) [+ lr_w CE(context)]."""
        fused, hr, lr = self.logits(emb)
        loss = (1.0 - self.hr_loss_weight - self.lr_loss_weight) * loss_fn(fused, y, w)
        if self.hr_loss_weight > 0:
            w_hr = w
            if w is not None and w.dim() >= 2 and tuple(w.shape[-2:]) == tuple(y.shape[-2:]):
                w_hr = crop(w, emb.box)
            loss = loss + self.hr_loss_weight * loss_fn(hr, crop(y, emb.box), w_hr)
        if self.lr_loss_weight > 0:
            loss = loss + self.lr_loss_weight * loss_fn(lr, y, w)
        return loss

    def seg_loss(  # type: ignore[override]
        self,
        x: Tensor,
        y: Tensor,
        w: Tensor | None = None,
        *,
        loss_fn: LossFn = weighted_cross_entropy,
        return_feat: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """The HRDA training loss on x (a new detail box), plus the context features with ``return_feat``."""
        emb = self.embed([x])[0]
        loss = self.embedding_loss(emb, y, w, loss_fn=loss_fn)
        return (loss, emb.lr_feats) if return_feat else loss

    def forward(self, x: Tensor, return_feat: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Training forward with a new detail box: fused logits at stride ``output_stride`` of x (and the
        context features). Inference goes through :meth:`predict`."""
        emb = self.embed([x])[0]
        fused = self.logits(emb)[0]
        return (fused, emb.lr_feats) if return_feat else fused

    # ------------------------------------------------------------------ inference
    def predict(self, x: Tensor) -> Tensor:
        """Fused logits at x's size: context at ``lr_scale``, detail from overlapping sliding windows."""
        h, w = x.shape[-2:]
        m = self.size_divisor
        if h % m or w % m:  # resize up to the next multiple of m, and the logits back (our addition)
            up = (math.ceil(h / m) * m, math.ceil(w / m) * m)
            return _resize(self.predict(_resize(x, up)), (h, w))
        lr_feats = self.extract_feat(self.context_view(x))
        lr = self.decode(lr_feats)
        att = self.attention(lr_feats)
        if self.hr_slide_inference:
            hr = hr_slide_logits(
                self,
                x,
                crop_size=self.hr_crop_size,
                stride=self.hr_slide_stride,
                output_stride=self.output_stride,
            )
        else:
            hr = self.decode(self.extract_feat(x))
        size = (h // self.output_stride, w // self.output_stride)
        fused, _ = fuse(
            lr, hr, att, size=size, box=None, output_stride=self.output_stride, lr_scale=self.lr_scale
        )
        return _resize(fused, (h, w))

"""TPS temporal pseudo-supervision: labels from earlier frames, warped forward, supervise a strong view.

Source: video_uda.md §3.3 (TPS ``train_TPS``), udass.md §2.6.3 (the UDASS video copy of it). Target clip of
four frames d = t, c = t−1, b = t−Δ, a = t−Δ−1 (Δ = ``data.interval``, 1 in every reference config, so
b = c):

1. **Weak view** (:meth:`weak_view`): frames b, a and the flow b→a, mirrored together with probability
   ``flip_p`` = 0.5 per clip (the flow mirrored *and* its u negated, :func:`src.data.flow.flip_flow`).
2. **Teacher** on (b, a, flow b→a) → P = softmax (the caller runs the two-frame teacher).
3. **Cross-frame pseudo-labels** (:meth:`labels`): P is un-mirrored, then warped onto frame d's grid with
   the flow d→b: ŷ = argmax warp(P, flow_{d→b}) at the logit resolution (the reference's ŷ_65, used by
   L_TPS). For QuadMix (udass.md §2.6.3 "full-res PL"), P upsampled to the input resolution and warped
   gives ŷ_d / conf_d, and the *unwarped* upsampled prediction gives ŷ_c / conf_c for the previous frame
   (exact for Δ = 1, where b = c; for Δ > 1 it is the prediction of frame t−Δ, as in the reference).
   No confidence threshold (TPS: ``TRAIN.THRESHOLD`` = 0 and unused; hard labels).
4. **Strong view** (:meth:`strong_view`): the current pair (d, c) through our strong augmentation
   (src/uda/augment.py, DACS colour jitter + blur) with **the same decisions and factors for both frames**
   (the reference concatenates the two frames vertically and augments them as one image). Student on
   (d̃, c̃, flow d→c).
5. ``L_TPS = CE(student, ŷ)`` (:meth:`loss`), scaled by λ_T in the training step (udass.md §2.6.6). The
   video module passes ADVENT's reduction (the mean over valid pixels, ``uda.loss_reduction``) and
   upsampling (``align_corners=True``, ``uda.align_corners``) of the references; pixels of weight 0 (the
   data pipeline's ``valid`` mask, the consistency mask below) are ignored pixels of ŷ.

Beyond the references (ours): ``consistency=True`` keeps only the pixels of ŷ whose flow d→b passes the
forward–backward test against the forward flow b→d (:func:`src.data.flow.flow_consistency`, α = 0.01,
β = 0.5 px², the standard occlusion test, plus points warped from outside frame b): the warp of the teacher's
map is meaningless at pixels occluded in frame b (disocclusions behind moving objects, the border the camera
reveals), and the references, which warp without a mask (video_uda.md §2.3), train on them. The forward
flow is the batch's ``flow_k_fwd`` (t−Δ → t: the data pipeline reads it from files or computes it with DIS,
``data.flow.forward``); the mask (at the flow's resolution) is area-downsampled to ŷ and kept where at least
half of a cell is consistent; ``train/tps_consistent`` logs its mean.

Reference quirks, documented and **not** reproduced by default:

- ``flip_quirk=True``: the mirrored flow b→a is not negated in u (TPS issue #9 / DA-VSN #8) and the d→b warp
  is applied to the still-mirrored P with the un-mirrored flow before un-mirroring (video_uda.md §3.3).
- ``pil_wraparound=True``: the strong view of TPS goes through torchvision ``ToPILImage`` on a mean-subtracted
  float tensor (×255 → uint8 wrap-around) and back through ``ToTensor`` ([0, 1] range), so the student sees
  scrambled intensities; emulated as x ← (trunc(255·x) mod 256) / 255 after the augmentation.
- ``key_confidence="logit"``: the previous-frame confidence conf_c is the max of the raw upsampled logits
  instead of the max softmax probability (udass.md §2.6.3, "threshold on raw logits — quirk").
- TPS's strong view is blur r∈{5,7,9} (p 0.6), ColorJitter(0.8,0.8,0.8,0.2) (p 0.8), RandomGrayscale (0.2)
  and a 0.8-1.2 rescale (SYNTHIA); the VIPER scripts keep no photometric augmentation. ``augment`` is the
  config's choice (the shared group ``conf/uda/augment``): the library's DACS augmentation
  (``uda/augment@uda.pseudo.augment=dacs``, the default), TPS's own view (``tps``,
  :mod:`src.uda.video.tps_augment`) or null (none, the VIPER setting).

Options that follow TPS (video_uda.md §3.3), off in the UDASS configs (udass.md §2.6.3 removed the rescale):

- ``rescale=(0.8, 1.2)``: the student's pair (and its flow d→c, components scaled) resized by one factor
  s ~ U[lo, hi) per step, the size rounded to a multiple of 8 (:meth:`rescale_view`); the prediction is
  resized back to the pseudo-label's size by the loss. QuadMix still mixes the un-rescaled strong view.
- :func:`match_histograms` (``uda.source_histogram_match``, step 1 of §3.3 / udass.md §2.6.1): the source
  frames histogram-matched, channel by channel, to the raw current target frame before the source loss
  (``skimage.exposure.match_histograms`` with ``multichannel=True``, re-implemented in torch).

All randomness goes through the explicit CPU ``torch.Generator`` of the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from src.data.flow import flip_flow, flow_consistency, resize_flow, warp
from src.models.losses import weighted_cross_entropy
from src.uda.augment import StrongAugment

KEY_CONFIDENCES = ("prob", "logit")


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """``numpy.interp`` for 1-D tensors: xp increasing; values outside [xp[0], xp[-1]] clamp to fp's ends."""
    i = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1) if xp.numel() > 1 else None
    if i is None:
        return fp.expand_as(x).clone()
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    t = ((x - x0) / (x1 - x0).clamp_min(torch.finfo(x.dtype).tiny)).clamp(0.0, 1.0)
    return f0 + t * (f1 - f0)


@torch.no_grad()
def match_histograms(x: Tensor, reference: Tensor) -> Tensor:
    """Match the histogram of each image of x (B,C,H,W) to the same-index image of ``reference``, per channel.

    TPS's source preprocessing (video_uda.md §3.3 step 1, udass.md §2.6.1): ``skimage.exposure.
    match_histograms(source, target, multichannel=True)``, i.e. for every channel the source values' empirical
    CDF is mapped through the reference's inverse CDF with linear interpolation between the reference's
    distinct values. ``reference`` may have another spatial size; its batch must be x's or 1. The mapping is
    invariant to a common per-channel increasing affine map, so normalised tensors give the normalised
    result of matching the raw RGB (float32 computation, x's dtype returned).
    """
    if x.dim() != 4 or reference.dim() != 4 or x.shape[1] != reference.shape[1]:
        raise ValueError(
            f"match_histograms: x {tuple(x.shape)} and reference {tuple(reference.shape)} must be (B,C,H,W) "
            f"with the same channels"
        )
    if reference.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"match_histograms: reference batch {reference.shape[0]} is neither 1 nor {x.shape[0]}"
        )
    out = torch.empty_like(x, dtype=torch.float32)
    for b in range(x.shape[0]):
        ref = reference[b if reference.shape[0] > 1 else 0]
        for c in range(x.shape[1]):
            src = x[b, c].float().reshape(-1)
            values, inverse, counts = torch.unique(src, return_inverse=True, return_counts=True)
            t_values, t_counts = torch.unique(ref[c].float().reshape(-1), return_counts=True)
            quantiles = torch.cumsum(counts, 0).float() / src.numel()
            t_quantiles = torch.cumsum(t_counts, 0).float() / t_counts.sum()
            out[b, c] = _interp(quantiles, t_quantiles, t_values)[inverse].view(x.shape[-2:])
    return out.to(x.dtype)


@dataclass
class CrossFramePseudoLabels:
    """TPS pseudo-labels of the current frame (and of the key frame, for video QuadMix)."""

    y: Tensor  # (B,h,w) long, argmax of the warped teacher probabilities at the teacher's logit resolution
    y_full: Tensor  # (B,H,W) long, the same at the input resolution (ŷ_d)
    p_full: Tensor  # (B,H,W) float32, its confidence (max warped probability, conf_d)
    y_key: Tensor  # (B,H,W) long, unwarped prediction of frame t−Δ at the input resolution (ŷ_c)
    p_key: Tensor  # (B,H,W) float32, its confidence (conf_c)
    consistent: Tensor | None = None  # (B,H',W') bool at the flow's resolution: the flow d→b passes the test
    p: Tensor | None = None  # (B,h,w) float32, the confidence of y (max warped probability at the logit res.)


def _mirror(x: Tensor, flipped: Tensor) -> Tensor:
    """Mirror the samples of x (B,...,W) whose flag in ``flipped`` (B,) is set."""
    f = flipped.to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(f, x.flip(-1), x)


class TemporalPseudoSupervision:
    """TPS cross-frame pseudo-labels and the strong current view (video_uda.md §3.3, udass.md §2.6.3).

    Args:
        flip_p: probability of mirroring the weak view (b, a, flow b→a), per clip (0.5).
        flip_quirk: reproduce the reference's flip inconsistencies (see the module docstring).
        augment: strong augmentation of the current pair, applied identically to both frames; None = none.
        pil_wraparound: emulate the reference's ToPILImage wrap-around on the strong view (quirk, off).
        rescale: (lo, hi) range of TPS's random rescale of the student's pair (§3.3: (0.8, 1.2)); None = off.
        key_confidence: ``"prob"`` (max softmax) or ``"logit"`` (reference quirk) for conf_c.
        consistency: keep only the pixels of ŷ whose flow passes the forward–backward test (ours, off).
        consistency_alpha, consistency_beta: α and β of the test (0.01, 0.5 px²).
        threshold: L_TPS only on the pixels of ŷ whose warped confidence is ≥ this (ours; None = every pixel,
            the references); the others weigh 0 but stay in the valid-pixel mean (FixMatch's masked mean).
        ignore_index: label value ignored by the loss (255).
    """

    def __init__(
        self,
        *,
        flip_p: float = 0.5,
        flip_quirk: bool = False,
        augment: StrongAugment | None = None,
        pil_wraparound: bool = False,
        key_confidence: str = "prob",
        rescale: tuple[float, float] | None = None,
        consistency: bool = False,
        consistency_alpha: float = 0.01,
        consistency_beta: float = 0.5,
        threshold: float | None = None,
        ignore_index: int = 255,
    ) -> None:
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        if key_confidence not in KEY_CONFIDENCES:
            raise ValueError(f"key_confidence must be one of {KEY_CONFIDENCES}, got {key_confidence!r}")
        self.flip_p = float(flip_p)
        self.flip_quirk = bool(flip_quirk)
        self.augment = augment
        self.pil_wraparound = bool(pil_wraparound)
        self.key_confidence = key_confidence
        if rescale is not None:
            lo, hi = (float(v) for v in rescale)
            if not 0.0 < lo <= hi:
                raise ValueError(
                    f"uda.pseudo.rescale must be [lo, hi] with 0 < lo <= hi, got {list(rescale)}"
                )
            rescale = (lo, hi)
        self.rescale = rescale
        self.consistency = bool(consistency)
        if consistency_alpha < 0 or consistency_beta < 0:
            raise ValueError(
                f"uda.pseudo.consistency_alpha / consistency_beta must be >= 0, got {consistency_alpha}, "
                f"{consistency_beta}"
            )
        self.consistency_alpha = float(consistency_alpha)
        self.consistency_beta = float(consistency_beta)
        if threshold is not None and not 0.0 < float(threshold) <= 1.0:
            raise ValueError(f"uda.pseudo.threshold must be in (0, 1] or null, got {threshold}")
        self.threshold = None if threshold is None else float(threshold)
        self.ignore_index = int(ignore_index)

    def confident(self, confidence: Tensor) -> Tensor:
        """The pixels L_TPS learns under ``threshold`` (bool, confidence ≥ τ; all of them without one)."""
        if self.threshold is None:
            return torch.ones_like(confidence, dtype=torch.bool)
        return confidence >= self.threshold

    # ------------------------------------------------------------------ 1. weak view
    def weak_view(
        self, x_k: Tensor, x_k_prev: Tensor, flow_k_prev: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(b, a, flow b→a) → the same, mirrored per clip with probability ``flip_p``; + flags (B,) bool."""
        flipped = torch.rand(x_k.shape[0], generator=generator, dtype=torch.float64) < self.flip_p
        flipped = flipped.to(x_k.device)
        # a mirrored flow points the other way horizontally: u is negated (the quirk mirrors the field only)
        mirrored = flip_flow(flow_k_prev, negate_u=not self.flip_quirk)
        flow = torch.where(flipped.view(-1, 1, 1, 1), mirrored, flow_k_prev)
        return _mirror(x_k, flipped), _mirror(x_k_prev, flipped), flow, flipped

    # ------------------------------------------------------------------ 3. cross-frame pseudo-labels
    @torch.no_grad()
    def labels(
        self,
        logits_k: Tensor,
        flow_k: Tensor,
        flipped: Tensor,
        size: tuple[int, int],
        *,
        flow_k_fwd: Tensor | None = None,
        align_corners: bool = False,
    ) -> CrossFramePseudoLabels:
        """Teacher logits of the weak view (B,C,h,w) + flow d→b (B,2,H,W) → pseudo-labels of frame d.

        ``flipped``: the flags of :meth:`weak_view`; ``size``: the input resolution (H, W); ``flow_k_fwd``:
        the forward flow b→d (needed with ``consistency``); ``align_corners``: of the upsampling to ``size``.
        """
        logits = logits_k.detach().float()
        size = (int(size[0]), int(size[1]))
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
        probs, probs_up = torch.softmax(logits, dim=1), torch.softmax(up, dim=1)
        warped = self._to_current(probs, flow_k, flipped)
        warped_up = self._to_current(probs_up, flow_k, flipped)
        up, probs_up = _mirror(up, flipped), _mirror(probs_up, flipped)
        p_full, y_full = warped_up.max(dim=1)
        p_key, y_key = probs_up.max(dim=1)
        if self.key_confidence == "logit":
            p_key = up.max(dim=1).values
        consistent = None
        if self.consistency:
            if flow_k_fwd is None:
                raise ValueError(
                    "uda.pseudo.consistency=true needs the forward flow t-Δ -> t (flow_k_fwd) in the target "
                    "batch: train with the video module, which asks the data pipeline for it"
                )
            consistent = flow_consistency(
                flow_k.float(), flow_k_fwd.float(), alpha=self.consistency_alpha, beta=self.consistency_beta
            )
        p, y = warped.max(dim=1)
        return CrossFramePseudoLabels(
            y=y,
            p=p,
            y_full=y_full,
            p_full=p_full,
            y_key=y_key,
            p_key=p_key,
            consistent=consistent,
        )

    @torch.no_grad()
    def low_res_labels(self, logits_k: Tensor, flow_k: Tensor, flipped: Tensor) -> Tensor:
        """Only ŷ of :meth:`labels` (the L_TPS target at the logit resolution), e.g. for the aux output."""
        probs = torch.softmax(logits_k.detach().float(), dim=1)
        return self._to_current(probs, flow_k, flipped).argmax(dim=1)

    def _to_current(self, p: Tensor, flow_k: Tensor, flipped: Tensor) -> Tensor:
        """Un-mirror the weak view's map p and warp it onto frame d's grid with the flow d→b."""
        if self.flip_quirk:  # warp in mirrored coordinates with the un-mirrored flow, then un-mirror
            return _mirror(warp(p, flow_k), flipped)
        return warp(_mirror(p, flipped), flow_k)

    # ------------------------------------------------------------------ 4. strong view
    def strong_view(self, x: Tensor, x_prev: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The current pair through the same strong augmentation (same decisions, same per-sample factors)."""
        if self.augment is not None:
            params = self.augment.draw(generator)
            pair = getattr(self.augment, "pair", None)
            if pair is not None:  # TPS's view: the two frames as one concatenated image (tps_augment.py)
                x, x_prev = pair(x, x_prev, params, generator)
            else:
                state = generator.get_state()
                x = self.augment(x, params, generator)
                generator.set_state(state)  # replay the same draws for frame t−1
                x_prev = self.augment(x_prev, params, generator)
        if self.pil_wraparound:
            x, x_prev = (torch.remainder(torch.trunc(v * 255.0), 256.0) / 255.0 for v in (x, x_prev))
        return x, x_prev

    def rescale_view(
        self,
        x: Tensor,
        x_prev: Tensor,
        flow: Tensor,
        generator: torch.Generator,
        *,
        align_corners: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """TPS's rescale of the student's pair (§3.3): one factor s ~ U[lo, hi), sizes rounded to 8s.

        Both frames bilinearly resized (``align_corners``: TPS's ``nn.Upsample`` uses True); the flow d→c
        resized to the new size with its components scaled (:func:`src.data.flow.resize_flow`). Identity when
        ``rescale`` is None.
        """
        if self.rescale is None:
            return x, x_prev, flow
        lo, hi = self.rescale
        s = lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))
        h, w = x.shape[-2:]
        size = (max(8, int(round(h * s / 8)) * 8), max(8, int(round(w * s / 8)) * 8))
        if size == (h, w):
            return x, x_prev, flow
        x, x_prev = (
            F.interpolate(v, size=size, mode="bilinear", align_corners=align_corners) for v in (x, x_prev)
        )
        return x, x_prev, resize_flow(flow, size)

    # ------------------------------------------------------------------ 5. loss
    def loss(
        self,
        logits: Tensor,
        labels: CrossFramePseudoLabels | Tensor,
        valid: Tensor | None = None,
        *,
        consistent: Tensor | None = None,
        confidence: Tensor | None = None,
        reduction: str = "all_pixels",
        align_corners: bool = False,
    ) -> Tensor:
        """CE of the student's two-frame logits against the hard cross-frame pseudo-label ŷ (no weighting):
        ``labels.y`` of :meth:`labels` (and its consistency mask), or a ŷ tensor (:meth:`low_res_labels`,
        with ``consistent`` and, with a ``threshold``, ``confidence`` (the (B,h,w) confidence of the main
        labels, resized nearest) passed explicitly).

        ``valid`` (B,H,W) / (B,1,H,W): optional pseudo-label margin mask of the data pipeline, resized
        (nearest) to ŷ; the consistency mask is area-downsampled to ŷ (kept where >= 0.5). Pixels outside
        either are ignored (label ``ignore_index``: weight 0, and out of the valid-pixel mean).
        ``reduction`` / ``align_corners``: of :func:`src.models.losses.weighted_cross_entropy`.
        """
        y = labels.y if isinstance(labels, CrossFramePseudoLabels) else labels
        if isinstance(labels, CrossFramePseudoLabels) and consistent is None:
            consistent = labels.consistent
        keep = None
        if valid is not None:
            v = valid.unsqueeze(1) if valid.dim() == 3 else valid
            keep = F.interpolate(v.float(), size=y.shape[-2:], mode="nearest")[:, 0] > 0
        if consistent is not None:
            c = consistent_at(consistent, tuple(y.shape[-2:]))
            keep = c if keep is None else keep & c
        if keep is not None:
            y = torch.where(keep, y, torch.full_like(y, self.ignore_index))
        weight = None
        if self.threshold is not None:
            if isinstance(labels, CrossFramePseudoLabels) and confidence is None:
                confidence = labels.p
            if confidence is None:
                raise ValueError("uda.pseudo.threshold: L_TPS of a label tensor needs its confidence")
            if tuple(confidence.shape[-2:]) != tuple(y.shape[-2:]):
                confidence = F.interpolate(confidence[:, None].float(), size=y.shape[-2:], mode="nearest")
                confidence = confidence[:, 0]
            weight = self.confident(confidence).float()
        return weighted_cross_entropy(logits, y, weight, ignore_index=self.ignore_index, reduction=reduction,
                                      align_corners=align_corners)  # fmt: skip


def consistent_at(consistent: Tensor, size: tuple[int, int]) -> Tensor:
    """The (B,H,W) bool consistency mask at ``size``: area-downsampled (upsampled: nearest), kept >= 0.5."""
    c = consistent.float().unsqueeze(1)
    if tuple(c.shape[-2:]) == tuple(size):
        return consistent.bool()
    shrink = c.shape[-2] >= size[0] and c.shape[-1] >= size[1]
    c = F.interpolate(c, size=size, mode="area" if shrink else "nearest")
    return c[:, 0] >= 0.5

"""OMUDA FDM (feature distillation masking), our design, reference/omuda.md §4.2.

OMUDA's abstract only says FDM gives "robust and consistent feature learning through knowledge transfer
from pre-trained models" (omuda.md §1.2); the rules below are the team's design of §4.2, an extension of
DAFormer's thing-class ImageNet feature distance (``src.uda.feature_distance``, daformer_mic.md §1.6).

- Source term, ``forward(student_feats, x, y)``: exactly DAFormer's FD on the clean source image and its
  ground truth (inherited from :class:`ImageNetFeatureDistance`; §4.2 "keep the original source FD").
- Target term, ``target_loss(student_feats_masked, x_clean, pseudo_label, weight, mask)``: the student's
  last-stage features of the **masked** target image (CAM, or MIC's block mask) against the frozen encoder
  E0's features of the **clean** target image, over the cell set Omega:
    * thing cells: the pseudo-label downscaled with DAFormer's ``downscale_label_ratio`` (majority class with
      fraction >= ``min_ratio`` = 0.75) is a thing class, **and** the cell passes CDM: the mean of the
      per-pixel pseudo-label weight over the cell's pixels is >= ``pass_threshold`` (0.5, our choice: a
      cell counts when most of its pixels are trusted; with DACS's scalar weight q every cell passes iff
      q >= 0.5);
    * masked background cells (``background_weight`` > 0, e.g. 0.1 in §4.2; default 0 = off): the cell's
      downscaled pseudo-label is a valid non-thing class and at least ``masked_min_ratio`` (0.5, our choice)
      of its pixels are masked (keep-mask = 0). They do not need to pass CDM (the pseudo-label only says
      "not a thing" here; the target is the encoder's feature, not the label).
  ``mode="distance"`` (default): weight (0.005) x weighted mean of ||F(x_masked)_p - E0(x)_p||_2 over Omega,
  thing cells weighted 1 and background cells ``background_weight``. With no masking (mask all ones) and
  all weights 1 it equals the source FD on the same image and labels (a test).
  ``mode="mgd"`` (§4.2 variant, MGD ECCV'22, omuda.md §3.7): the student's masked-image features are further
  dropped per position with probability ``mgd_drop`` (0.75, MGD's segmentation config), a generator
  ``self.generator`` (3x3 conv -> ReLU -> 3x3 conv at E0's channel count, plus a 1x1 ``self.align`` conv when
  the student's channels differ) reconstructs E0's features, loss = ``mgd_alpha`` (2e-5) x sum over Omega of
  omega_p x ||G(S)_p - E0(x)_p||^2 / B (MGD's summed MSE over the batch size). ``weight`` does not apply.
  The generator's parameters are trainable and must be added to the optimiser; it is unused at inference.
- Empty Omega: a zero connected to the graph (student features, and the generator in MGD mode), never NaN.
- ``target=False`` switches the target term off (FDM = FD, the §4.2 "source only" ablation); the caller
  checks ``fdm.target`` before computing the masked features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.data.classes import IGNORE_INDEX, THING_CLASSES
from src.uda.feature_distance import ImageNetFeatureDistance, downscale_label_ratio


def _last(feats: Tensor | Sequence[Tensor]) -> Tensor:
    return feats if isinstance(feats, Tensor) else feats[-1]


class FeatureDistillationMasking(ImageNetFeatureDistance):
    """OMUDA feature distillation masking (FDM), our design, reference/omuda.md §4.2.

    ``forward`` is DAFormer's thing-class ImageNet FD on the source (unchanged); ``target_loss`` is the
    masked-to-clean distillation on the target's thing cells that pass CDM (+ optional masked background).
    Defaults: weight 0.005 (lambda_FDM = lambda_FD, §4.2), thing classes and min_ratio 0.75 as DAFormer,
    background_weight 0 (optional 0.1, §4.2), pass_threshold 0.5 and masked_min_ratio 0.5 (our choices),
    MGD drop 0.75 and alpha 2e-5 (MGD segmentation config, §3.7).
    """

    def __init__(
        self,
        *,
        encoder: nn.Module,
        weight: float = 0.005,
        classes: Sequence[int] | None = THING_CLASSES,
        min_ratio: float = 0.75,
        num_classes: int = 19,
        ignore_index: int = IGNORE_INDEX,
        background_weight: float = 0.0,
        pass_threshold: float = 0.5,
        masked_min_ratio: float = 0.5,
        mode: str = "distance",
        mgd_drop: float = 0.75,
        mgd_alpha: float = 2e-5,
        channels: int | None = None,
        student_channels: int | None = None,
        target: bool = True,
        target_min_ratio: float | None = None,
        gate: str = "host",
        gate_threshold: float = 0.968,
        soft_cells: bool = False,
    ) -> None:
        super().__init__(
            encoder=encoder,
            weight=weight,
            classes=classes,
            min_ratio=min_ratio,
            num_classes=num_classes,
            ignore_index=ignore_index,
        )
        if mode not in ("distance", "mgd"):
            raise ValueError(f"mode must be 'distance' or 'mgd', got {mode!r}")
        if background_weight < 0:
            raise ValueError(f"background_weight must be >= 0, got {background_weight}")
        if not 0.0 <= mgd_drop < 1.0:
            raise ValueError(f"mgd_drop must be in [0, 1), got {mgd_drop}")
        self.background_weight = float(background_weight)
        self.pass_threshold = float(pass_threshold)
        self.masked_min_ratio = float(masked_min_ratio)
        self.mode = mode
        self.mgd_drop = float(mgd_drop)
        self.mgd_alpha = float(mgd_alpha)
        self.target = bool(target)
        if gate not in ("host", "confidence"):
            raise ValueError(f"gate must be 'host' or 'confidence', got {gate!r}")
        self.gate = gate
        self.gate_threshold = float(gate_threshold)
        self.soft_cells = bool(soft_cells)
        self.last_active_cells: Tensor | None = None
        # Majority fraction a *target* thing cell needs; None = min_ratio (DAFormer's 0.75). Synthetic runs
        # lower it: at 128 px crops a 32 px cell of the last stage rarely is 75 % one thing class.
        self.target_min_ratio = self.min_ratio if target_min_ratio is None else float(target_min_ratio)
        if not 0.0 < self.target_min_ratio <= 1.0:
            raise ValueError(f"target_min_ratio must be in (0, 1], got {target_min_ratio}")
        self.generator: nn.Module | None = None
        self.align: nn.Module | None = None
        if mode == "mgd":
            if channels is None:
                out = getattr(encoder, "out_channels", None)
                if out is None:
                    raise ValueError("mode='mgd' needs channels= (the encoder has no out_channels attribute)")
                channels = int(out[-1]) if isinstance(out, Sequence) else int(out)
            student_channels = channels if student_channels is None else int(student_channels)
            if student_channels != channels:
                self.align = nn.Conv2d(student_channels, channels, kernel_size=1)
            self.generator = nn.Sequential(
                nn.Conv2d(channels, channels, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            )

    # ------------------------------------------------------------------ cell sets
    @torch.no_grad()
    def target_cells(
        self,
        pseudo_label: Tensor,
        weight: Tensor | None,
        mask: Tensor | None,
        feat_shape: Sequence[int],
        confidence: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(thing cells, masked background cells) (B,h,w) for a feature map (..., h, w): bool, or with
        ``soft_cells`` the thing cells as float weights (the passing fraction of the cell's pixels)."""
        y = pseudo_label.squeeze(1) if pseudo_label.dim() == 4 else pseudo_label
        scale = y.shape[-1] // feat_shape[-1]
        y_ds = downscale_label_ratio(
            y,
            scale=scale,
            min_ratio=self.target_min_ratio,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
        )
        valid = y_ds != self.ignore_index
        if self.classes is None:  # the ``dacs_fd`` variant: every valid cell is a "thing" cell
            is_thing_class = valid.clone()
        else:
            is_thing_class = torch.isin(y_ds, torch.tensor(self.classes, device=y_ds.device))
        thing = is_thing_class
        # The gate: the host's pseudo-label weight (gate="host": with DACS's scalar q every cell passes iff
        # q >= pass_threshold), or FDM's own, the teacher's confidence (gate="confidence": the fraction of
        # the cell's pixels with p_max >= gate_threshold).
        if self.gate == "confidence" and confidence is not None:
            c = confidence.squeeze(1) if confidence.dim() == 4 else confidence
            w = (c.to(device=y.device) >= self.gate_threshold).float()
        elif self.gate == "host" and weight is not None:
            w = weight.squeeze(1) if weight.dim() == 4 else weight
            w = w.to(device=y.device, dtype=torch.float32).expand_as(y)
        else:
            w = None
        if w is not None:
            passing = F.avg_pool2d(w.unsqueeze(1), kernel_size=scale, stride=scale).squeeze(1)
            if self.soft_cells:
                thing = thing.float() * passing
            else:
                thing = thing & (passing >= self.pass_threshold)
        if mask is None or self.background_weight <= 0:
            return thing, torch.zeros_like(thing)
        m = mask if mask.dim() == 4 else mask.unsqueeze(1)
        masked_frac = 1.0 - F.avg_pool2d(m.to(y.device).float(), kernel_size=scale, stride=scale).squeeze(1)
        background = valid & ~is_thing_class & (masked_frac >= self.masked_min_ratio)
        return thing, background

    # ------------------------------------------------------------------ target term
    def target_loss(
        self,
        student_feats_masked: Tensor | Sequence[Tensor],
        x_clean: Tensor,
        pseudo_label: Tensor,
        weight: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        confidence: Tensor | None = None,
    ) -> Tensor:
        """FDM target loss (omuda.md §4.2): masked-image student features vs E0 on the clean image.

        ``student_feats_masked``: the student's stage features of the masked target (last one used);
        ``x_clean`` (B,3,H,W) the clean target; ``pseudo_label`` (B,H,W); ``weight`` the per-pixel
        pseudo-label weight (B,H,W) (CDM, or DACS's scalar broadcast), None = all pass; ``mask`` the
        (B,1,H,W) keep-mask (0 = masked), None = no masking. ``generator`` drives MGD's feature drop (CPU
        generator; None = global RNG).
        """
        feat = _last(student_feats_masked)
        with torch.no_grad():
            e0 = _last(self.encoder(x_clean)).detach().float()
        if self.mode == "distance" and feat.shape != e0.shape:
            raise ValueError(f"student feature {tuple(feat.shape)} != encoder feature {tuple(e0.shape)}")
        thing, bg = self.target_cells(pseudo_label, weight, mask, feat.shape, confidence)
        omega = thing.float() + self.background_weight * bg.float()  # (B,h,w) cell weights
        self.last_active_cells = (thing.float() > 0).float().mean().detach()

        if self.mode == "distance":
            diff = torch.linalg.vector_norm(feat.float() - e0, ord=2, dim=1)  # (B,h,w)
            total = omega.sum()
            if total <= 0:
                return feat.float().sum() * 0.0
            return self.weight * (diff * omega).sum() / total

        # MGD: random feature-position drop, generative reconstruction of E0's features.
        s = feat.float()
        b, _, h, w = s.shape
        u = torch.rand((b, 1, h, w), generator=generator) if generator is not None else None
        u = u.to(s.device) if u is not None else torch.rand((b, 1, h, w), device=s.device)
        s = s * (u >= self.mgd_drop).to(s.dtype)  # MGD: a position is dropped with probability mgd_drop
        if self.align is not None:
            s = self.align(s)
        rec = self.generator(s)
        if omega.sum() <= 0:
            return rec.sum() * 0.0
        sq = (rec.float() - e0).pow(2).sum(dim=1)  # (B,h,w) squared error summed over channels
        return self.mgd_alpha * (sq * omega).sum() / b

"""Spatio-temporal class-prototype alignment: multi-kernel MMD between source and target class prototypes.

Source: udass.md §2.6.5 ("flow-guided spatio-temporal aggregation for fine-grained alignment" as
implemented in the video scripts), weight 0.01 in the total loss (§2.6.6).

- **Source prototypes**: for each class c, the mean of the C-dim fused two-frame **logit** vectors (not deep
  features) over the pixels whose label is c *and* whose argmax is c (labels nearest-resized to the logit
  resolution); at least ``min_pixels`` (5) such pixels, else a zero row. Stacked into a C×C matrix.
- **Target prototypes**: for each two-frame target prediction (the student on the strong current pair
  (d̃, c̃, flow d→c), and on (d, a, flow d→a), a = t−Δ−1: the "temporally aggregated" pair), the class mean
  over its own argmax (same ``min_pixels``, zero rows otherwise); the matrices are averaged with
  ``target_weights`` (0.5 / 0.5; the ViT reference uses only the first pair: weights [1.0]).
- **MMD**: the C rows of each matrix are C samples; multi-kernel Gaussian kernel
  K(u, v) = Σ_{i=0..4} exp(−‖u − v‖² / β_i), β_i = β̄ · 2^{i−2}, β̄ = mean squared distance over the distinct
  pairs of all 2C rows (detached, the DAN bandwidth rule); loss = mean(K_SS) + mean(K_TT) − mean(K_ST) −
  mean(K_TS) (the biased MMD² estimate: 0 for identical sets, > 0 otherwise).
- Zero rows of absent classes take part, as in the reference (``rows="all"``); ``rows="shared"`` keeps only
  the classes present in both sets (ours, an option).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ROW_MODES = ("all", "shared")


def class_prototypes(
    logits: Tensor, labels: Tensor | None = None, *, min_pixels: int = 5, ignore_index: int = 255
) -> tuple[Tensor, Tensor]:
    """(C, C) class-mean logit vectors and (C,) bool presence.

    ``labels`` (B,H,W) given (source): pixels with label c and argmax c, labels nearest-resized to the logits;
    None (target): pixels whose argmax is c. Classes with fewer than ``min_pixels`` pixels get a zero row.
    """
    b, c, h, w = logits.shape
    pred = logits.detach().argmax(dim=1)
    if labels is not None:
        lab = labels.unsqueeze(1) if labels.dim() == 3 else labels
        lab = F.interpolate(lab.float(), size=(h, w), mode="nearest")[:, 0].long()
        member = (lab == pred) & (lab != ignore_index)
        cls = torch.where(member, pred, torch.full_like(pred, c))  # c = "no class"
    else:
        cls = pred
    onehot = F.one_hot(cls.reshape(-1), num_classes=c + 1)[:, :c].to(logits.dtype)  # (N, C)
    counts = onehot.sum(dim=0)  # (C,)
    vecs = logits.permute(0, 2, 3, 1).reshape(-1, c)  # (N, C) logit vectors
    sums = onehot.t() @ vecs  # (C, C): row k = sum of the vectors of class k
    present = counts >= min_pixels
    protos = sums / counts.clamp_min(1.0).unsqueeze(1)
    return torch.where(present.unsqueeze(1), protos, torch.zeros_like(protos)), present


def multi_kernel_mmd(x: Tensor, y: Tensor, *, num_kernels: int = 5, kernel_mul: float = 2.0) -> Tensor:
    """Biased MMD² between the rows of x (n,d) and y (m,d) with a sum of ``num_kernels`` Gaussian kernels.

    Bandwidths β̄ · kernel_mul^(i − num_kernels // 2), β̄ = the mean squared distance over distinct pairs of
    the n + m rows (detached); mean(K_xx) + mean(K_yy) − 2 mean(K_xy).
    """
    z = torch.cat([x, y], dim=0).float()
    n = z.shape[0]
    d2 = torch.cdist(z, z).pow(2)
    bandwidth = (d2.detach().sum() / max(n * n - n, 1)).clamp_min(1e-12)
    base = bandwidth / (kernel_mul ** (num_kernels // 2))
    k = sum(torch.exp(-d2 / (base * kernel_mul**i)) for i in range(num_kernels))
    nx = x.shape[0]
    k_xx, k_yy, k_xy = k[:nx, :nx], k[nx:, nx:], k[:nx, nx:]
    return k_xx.mean() + k_yy.mean() - 2.0 * k_xy.mean()


class PrototypeMMD:
    """Class-prototype multi-kernel MMD (udass.md §2.6.5), ``weight`` 0.01 in the total loss (§2.6.6).

    Args:
        weight: loss weight (0.01), applied by the training step.
        min_pixels: pixels needed for a prototype (5).
        target_weights: weights of the target predictions' prototype matrices (0.5, 0.5: the (d̃, c̃) and the
            (d, a) pairs; [1.0]: only the first, the ViT reference). Their number is the number of target
            predictions the training step computes.
        num_kernels / kernel_mul: 5 kernels, bandwidth ratio 2 (β̄ · 2^{i−2}).
        rows: ``"all"`` (reference: zero rows of absent classes included) or ``"shared"``.
        ignore_index: 255.
    """

    def __init__(
        self,
        *,
        weight: float = 0.01,
        min_pixels: int = 5,
        target_weights: Sequence[float] = (0.5, 0.5),
        num_kernels: int = 5,
        kernel_mul: float = 2.0,
        rows: str = "all",
        ignore_index: int = 255,
    ) -> None:
        if rows not in ROW_MODES:
            raise ValueError(f"rows must be one of {ROW_MODES}, got {rows!r}")
        if not target_weights or len(target_weights) > 2:
            raise ValueError(
                f"target_weights must hold 1 or 2 weights (the (t, t-1) pair and optionally the (t, t-Δ-1) "
                f"pair), got {list(target_weights)}"
            )
        if num_kernels < 1 or min_pixels < 1:
            raise ValueError("num_kernels and min_pixels must be >= 1")
        self.weight = float(weight)
        self.min_pixels = int(min_pixels)
        self.target_weights = tuple(float(w) for w in target_weights)
        self.num_kernels = int(num_kernels)
        self.kernel_mul = float(kernel_mul)
        self.rows = rows
        self.ignore_index = int(ignore_index)

    @property
    def num_target_predictions(self) -> int:
        return len(self.target_weights)

    def prototypes(
        self, source_logits: Tensor, source_labels: Tensor, target_logits: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(source (C,C), target (C,C), rows kept (C,) bool)."""
        if len(target_logits) != len(self.target_weights):
            raise ValueError(
                f"{len(target_logits)} target predictions for {len(self.target_weights)} target_weights"
            )
        src, src_present = class_prototypes(
            source_logits.float(), source_labels, min_pixels=self.min_pixels, ignore_index=self.ignore_index
        )
        tgt = torch.zeros_like(src)
        tgt_present = torch.zeros_like(src_present)
        for w, logits in zip(self.target_weights, target_logits):
            p, present = class_prototypes(logits.float(), None, min_pixels=self.min_pixels)
            tgt = tgt + w * p
            tgt_present |= present
        keep = src_present & tgt_present if self.rows == "shared" else torch.ones_like(src_present)
        return src, tgt, keep

    def __call__(
        self, source_logits: Tensor, source_labels: Tensor, target_logits: Sequence[Tensor]
    ) -> Tensor:
        """Unweighted MMD² between the source and target prototype rows (0 when ``shared`` keeps none)."""
        src, tgt, keep = self.prototypes(source_logits, source_labels, target_logits)
        if not bool(keep.any()):
            return src.sum() * 0.0
        return multi_kernel_mmd(
            src[keep], tgt[keep], num_kernels=self.num_kernels, kernel_mul=self.kernel_mul
        )

"""ImageNet feature distance (FD) with the thing-class mask.

Source: DAFormer ``dacs.py`` (``calc_feat_dist``, ``masked_feat_dist``) and ``mmseg/utils/utils.py``
(``downscale_label_ratio``), daformer_mic.md §1.6.

- Only the **last** encoder stage of the student and of the frozen ImageNet encoder is used.
- Per feature cell: the L2 norm over channels of (student − ImageNet) features.
- Mask: the source label downscaled by ``scale = W_label // W_feat`` with :func:`downscale_label_ratio`
  (majority class of each scale×scale cell, 255 where its fraction < 0.75, ignore counted as a class),
  then kept where the class is one of ``classes`` (the 10 DAFormer thing classes by default).
  ``classes=None`` is the ``dacs_fd`` variant: no label mask at all, the mean runs over every cell (as the
  reference, which skips the downscaling in that case).
- L_FD = weight (0.005) × mean of the distances over the masked cells.
- Guard (our addition; the reference returns NaN with no graph connection): an empty mask gives
  ``student_feat.sum() * 0``, a zero that keeps the graph connected.
- The ImageNet encoder is frozen and stays in eval mode even when ``.train()`` is called on a parent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.data.classes import IGNORE_INDEX, THING_CLASSES


@torch.no_grad()
def downscale_label_ratio(
    y: Tensor, *, scale: int, min_ratio: float, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Majority-class label downscaling (daformer_mic.md §1.6).

    y (B,H,W) or (B,1,H,W) -> (B, H//scale, W//scale) long. One-hot with ignore as an extra class,
    average pooling with kernel = stride = scale, argmax class (first on ties); cells whose majority class is
    the ignore class or whose majority fraction is < ``min_ratio`` become ``ignore_index``.
    """
    if y.dim() == 4:
        y = y.squeeze(1)
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    y = y.long().clone()
    ignore_sub = num_classes
    y[(y == ignore_index) | (y < 0) | (y >= num_classes)] = ignore_sub
    one_hot = F.one_hot(y, num_classes=num_classes + 1).permute(0, 3, 1, 2).float()
    ratio, out = F.avg_pool2d(one_hot, kernel_size=scale, stride=scale).max(dim=1)
    out[out == ignore_sub] = ignore_index
    out[ratio < min_ratio] = ignore_index
    return out


def feature_distance(student_feat: Tensor, imnet_feat: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over masked cells of ||student − imnet||_2 over channels (B,C,h,w); float32 scalar.

    ``mask``: (B,h,w) or (B,1,h,w) bool, or None for all cells. An empty mask returns
    ``student_feat.sum() * 0`` (zero connected to the graph, not NaN).
    """
    if student_feat.shape != imnet_feat.shape:
        raise ValueError(
            f"student feature {tuple(student_feat.shape)} and ImageNet feature "
            f"{tuple(imnet_feat.shape)} differ in shape"
        )
    diff = torch.linalg.vector_norm(student_feat.float() - imnet_feat.detach().float(), ord=2, dim=1)
    if mask is not None:
        if mask.dim() == 4:
            mask = mask.squeeze(1)
        diff = diff[mask.bool()]
    if diff.numel() == 0:
        return student_feat.float().sum() * 0.0
    return diff.mean()


class ImageNetFeatureDistance(nn.Module):
    """DAFormer FD regulariser against a frozen ImageNet encoder (daformer_mic.md §1.6).

    ``encoder.forward(x)`` returns the list of stage features; only the last one is used.
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
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.weight = float(weight)
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self.min_ratio = float(min_ratio)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)

    def train(self, mode: bool = True) -> ImageNetFeatureDistance:
        super().train(mode)
        self.encoder.eval()
        return self

    def mask(self, y: Tensor, feat_shape: Sequence[int]) -> Tensor | None:
        """Thing-class cell mask (B,h,w) bool for a label y and a feature map of shape (..., h, w)."""
        if self.classes is None:
            return None
        scale = y.shape[-1] // feat_shape[-1]
        y_ds = downscale_label_ratio(
            y,
            scale=scale,
            min_ratio=self.min_ratio,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
        )
        return torch.isin(y_ds, torch.tensor(self.classes, device=y_ds.device))

    def forward(self, student_feats: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
        """weight × FD between the student's and the ImageNet encoder's last-stage features of x."""
        with torch.no_grad():
            imnet_feats = self.encoder(x)
        feat = student_feats[-1]
        imnet = imnet_feats[-1] if isinstance(imnet_feats, list | tuple) else imnet_feats
        return self.weight * feature_distance(feat, imnet, self.mask(y, feat.shape))

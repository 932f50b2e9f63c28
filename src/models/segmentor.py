"""Encoder-decoder segmentor: backbone -> decode head (mmseg ``EncoderDecoder``, daformer_mic.md §4).

Submodules are named exactly ``backbone`` and ``head``: the optimizer gives every parameter whose name
contains ``head`` a 10x learning rate (daformer_mic.md §5), and the ImageNet feature distance uses
``extract_feat`` (§1.6). ``predict`` is the reference ``encode_decode``: logits bilinearly upsampled to the
input size with align_corners=False.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Segmentor"]


class Segmentor(nn.Module):
    """Backbone + decode head.

    Args:
        backbone: module mapping (B, 3, H, W) to a list of feature maps.
        head: module mapping that list to logits (B, num_classes, h, w) at the head's resolution.
        num_classes: number of output classes (checked against ``head.num_classes`` when it has one).
    """

    def __init__(self, *, backbone: nn.Module, head: nn.Module, num_classes: int) -> None:
        super().__init__()
        head_classes = getattr(head, "num_classes", num_classes)
        if head_classes != num_classes:
            raise ValueError(f"head has {head_classes} classes but num_classes={num_classes}")
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes

    def extract_feat(self, x: Tensor) -> list[Tensor]:
        """Backbone features (MiT: 4 maps at strides 4/8/16/32; ResNet-V1c: strides 4/8/8/8)."""
        return list(self.backbone(x))

    def decode(self, feats: list[Tensor]) -> Tensor:
        """Logits at the head's resolution (stride 4 for DAFormer, 8 for DeepLabV2)."""
        return self.head(feats)

    def forward(self, x: Tensor, return_feat: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        feats = self.extract_feat(x)
        logits = self.decode(feats)
        return (logits, feats) if return_feat else logits

    def predict(self, x: Tensor) -> Tensor:
        """Logits bilinearly upsampled to the input's H, W (align_corners=False)."""
        logits = self.decode(self.extract_feat(x))
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

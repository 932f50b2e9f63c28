"""Encoder-decoder segmentor: backbone -> decode head (mmseg ``EncoderDecoder``, daformer_mic.md §4).

Submodules are named exactly ``backbone`` and ``head``: the optimizer gives every parameter whose name
contains ``head`` a 10x learning rate (daformer_mic.md §5), and the ImageNet feature distance uses
``extract_feat`` (§1.6). ``predict`` is the reference ``encode_decode``: logits bilinearly upsampled to the
input size with align_corners=False.

Training-loss interface shared with the HRDA wrapper (``src/models/hrda.py``), so that the UDA module stays
generic: ``seg_loss(x, y, w, loss_fn=...)`` is the segmentor's own training loss (here
``loss_fn(f(x), y, w)``; HRDA: fused + detail), ``feature_input(x)`` the image the returned features come from
(here ``x``; HRDA: the context view, for the feature distance), and ``embed`` / ``blend`` /
``embedding_loss`` the same loss split at the decoder embedding, for methods that mix embeddings (QuadMix
feature mixing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from src.models.losses import weighted_cross_entropy

__all__ = ["Segmentor", "LossFn", "BlendFn"]

#: ``loss_fn(logits, target, weight)`` -> scalar (``src.models.losses.weighted_cross_entropy``)
LossFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
#: ``blend(emb_a, emb_b, region)`` -> mixed embedding (``src.uda.mixing.quadmix.feature_mix``)
BlendFn = Callable[[Tensor, Tensor, Tensor], Tensor]


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

    # ------------------------------------------------------------------ training-loss interface
    def feature_input(self, x: Tensor) -> Tensor:
        """The image the features returned with the loss are computed from: ``x`` itself."""
        return x

    def seg_loss(
        self,
        x: Tensor,
        y: Tensor,
        w: Tensor | None = None,
        *,
        loss_fn: LossFn = weighted_cross_entropy,
        return_feat: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """``loss_fn(f(x), y, w)``, plus the backbone features of ``x`` with ``return_feat``."""
        logits, feats = self(x, return_feat=True)
        loss = loss_fn(logits, y, w)
        return (loss, feats) if return_feat else loss

    def embed(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """Decoder embeddings (before dropout and classifier) of several training inputs."""
        return [self.head.forward_embedding(self.extract_feat(x)) for x in xs]

    def blend(self, emb: Tensor, other: Tensor, region: Tensor, fn: BlendFn) -> Tensor:
        """``fn(emb, other, region)``: mixes two embeddings of :meth:`embed` (region at image resolution)."""
        return fn(emb, other, region)

    def embedding_loss(
        self, emb: Tensor, y: Tensor, w: Tensor | None = None, *, loss_fn: LossFn = weighted_cross_entropy
    ) -> Tensor:
        """``loss_fn(classify(emb), y, w)``: :meth:`seg_loss` from an embedding of :meth:`embed`."""
        return loss_fn(self.head.classify(emb), y, w)

"""DeepLabV2 ASPP classifier head (DACS / DAFormer CNN baseline, daformer_mic.md §4.3).

mmseg ``DLV2Head``: parallel 3x3 convolutions with different dilations map the last backbone feature map
straight to ``num_classes`` logits, and their outputs are **summed**. No BN, no dropout; weights
Normal(0, 0.01), zero bias.

Default dilations (6, 12) are the reference's **"dlv2red"** head: the original AdaptSegNet classifier returns
inside its summation loop, so only the first two of (6, 12, 18, 24) are used, and DAFormer's
``deeplabv2red`` configs reproduce that (comment in DAFormer ``experiments.py``). Pass
``dilations=(6, 12, 18, 24)`` for the head of the original DeepLabV2 paper.

``in_index`` picks the backbone map the head reads (-1, the last); the two-frame CNN student's auxiliary
classifier (udass.md §2.5a, ``layer5``) is this head with dilations (6, 12, 18, 24) on layer3
(``in_index=-2``, 1024 channels for ResNet-101).

``forward_embedding`` returns the input feature map itself (the head has no hidden layer, so the backbone's
last map, 2048 channels at stride 8 for ResNet-101, is the decoder embedding) and ``classify`` applies the
summed ASPP; methods that mix decoder embeddings mix these backbone features.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["DeepLabV2Head"]


class DeepLabV2Head(nn.Module):
    """Sum of dilated 3x3 convs on ``feats[-1]`` (DeepLabV2 ASPP; default dilations (6, 12) = "dlv2red").

    Args:
        in_channels: channels of the last backbone map (2048 for ResNet-50/101).
        num_classes: output classes.
        dilations: ASPP dilations; (6, 12) reference default, (6, 12, 18, 24) original DeepLabV2.
        in_index: index of the backbone feature map the head reads (-1 = the last).
    """

    def __init__(
        self, *, in_channels: int, num_classes: int, dilations: Sequence[int] = (6, 12), in_index: int = -1
    ) -> None:
        super().__init__()
        self.in_index = int(in_index)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = in_channels  # width of the embedding returned by forward_embedding
        self.dilations = tuple(dilations)
        self.aspp_modules = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=d, dilation=d, bias=True)
            for d in dilations
        )
        for conv in self.aspp_modules:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward_embedding(self, feats: Sequence[Tensor] | Tensor) -> Tensor:
        """The decoder embedding is the last backbone feature map itself (no hidden decoder layer)."""
        return feats if isinstance(feats, Tensor) else feats[self.in_index]

    def classify(self, embedding: Tensor) -> Tensor:
        out = self.aspp_modules[0](embedding)
        for conv in self.aspp_modules[1:]:
            out = out + conv(embedding)
        return out

    def forward(self, feats: Sequence[Tensor] | Tensor) -> Tensor:
        return self.classify(self.forward_embedding(feats))

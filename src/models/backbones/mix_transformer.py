"""Mix Transformer (MiT) encoder of SegFormer, the DAFormer / HRDA / MIC backbone.

Re-implemented from the reference notes (daformer_mic.md §4.1); timm has no MiT.

* Overlapping patch embeddings: Conv2d 7x7 / stride 4 / pad 3 for stage 1, 3x3 / stride 2 / pad 1 for
  stages 2-4, each followed by a LayerNorm, so the 4 stage outputs have strides 4 / 8 / 16 / 32.
* Efficient self-attention: queries from all tokens; keys/values from a spatially reduced token map
  (Conv2d with kernel = stride = ``sr_ratio`` followed by LayerNorm) when ``sr_ratio > 1``.
* Mix-FFN: fc1 -> 3x3 depthwise conv -> GELU -> fc2 (the depthwise conv replaces positional encodings).
* Pre-norm residual blocks with stochastic depth increasing linearly from 0 to ``drop_path_rate`` over
  all blocks of all stages, and a LayerNorm after each stage.

Parameter names follow SegFormer's ImageNet checkpoints (``mit_b5.pth``): ``patch_embed{1..4}.proj/.norm``,
``block{1..4}.{i}.norm1/.attn.q/.attn.kv/.attn.sr/.attn.norm/.attn.proj/.norm2/.mlp.fc1/.mlp.dwconv.dwconv/
.mlp.fc2`` and ``norm{1..4}``, so the original weights load by name (its ``head.*`` classifier is dropped by
:func:`src.models.pretrained.load_backbone_weights`). The Hugging Face layouts (hub ``nvidia/mit-b*`` files,
transformers >= 5) are renamed by :meth:`MixVisionTransformer.convert_state_dict`
(``src/models/backbones/segformer_hf.py``).

Quirk kept from SegFormer: only the block norms and the stage norms use ``eps=1e-6``; the patch-embedding
LayerNorm and the spatial-reduction LayerNorm of the attention use PyTorch's default ``eps=1e-5``
(``layer_norm_eps`` sets the former, ``embed_norm_eps`` the latter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import Tensor, nn

from src.models.backbones.segformer_hf import convert_hf_segformer, is_hf_segformer
from src.models.checkpointing import checkpoint_call, use_checkpoint

__all__ = [
    "MixVisionTransformer",
    "MIT_CONFIGS",
    "mit_b0",
    "mit_b1",
    "mit_b2",
    "mit_b3",
    "mit_b4",
    "mit_b5",
]


def _tokens_to_map(x: Tensor, h: int, w: int) -> Tensor:
    """(B, N, C) tokens -> (B, C, H, W) map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: Conv2d (kernel > stride) + LayerNorm (SegFormer, daformer_mic.md §4.1)."""

    def __init__(
        self, *, in_chans: int, embed_dim: int, patch_size: int, stride: int, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=stride, padding=patch_size // 2
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention with spatially reduced keys/values (SegFormer "efficient self-attention").

    With ``sr_ratio > 1`` the keys and values are computed from the token map reduced by a Conv2d with
    kernel = stride = ``sr_ratio`` followed by a LayerNorm (daformer_mic.md §4.1). Scale is head_dim**-0.5.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        sr_ratio: int = 1,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        head_dim = c // self.num_heads
        q = self.q(x).reshape(b, n, self.num_heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x_kv = self.sr(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)
            x_kv = self.norm(x_kv)
        else:
            x_kv = x
        kv = self.kv(x_kv).reshape(b, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        # softmax(q k^T / sqrt(head_dim)) v, the same maths as the explicit SegFormer attention.
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class DWConv(nn.Module):
    """3x3 depthwise convolution on the token map (the positional part of Mix-FFN)."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim, bias=True)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.dwconv(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Mix-FFN: fc1 -> 3x3 depthwise conv -> GELU -> fc2 (SegFormer, daformer_mic.md §4.1)."""

    def __init__(self, *, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(dim=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), h, w)))
        return self.drop(self.fc2(x))


class MiTBlock(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MixFFN(LN(x)))."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        sr_ratio: int = 1,
        norm_eps: float = 1e-6,
        attn_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = EfficientSelfAttention(
            dim=dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            sr_ratio=sr_ratio,
            norm_eps=attn_norm_eps,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MixFFN(dim=dim, hidden_dim=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(nn.Module):
    """SegFormer Mix Transformer encoder returning 4 NCHW feature maps (strides 4, 8, 16, 32).

    DAFormer uses MiT-B5 (daformer_mic.md §4.1): embed_dims (64, 128, 320, 512), depths (3, 6, 40, 3),
    heads (1, 2, 5, 8), mlp ratio 4, sr ratios (8, 4, 2, 1), qkv_bias=True, LayerNorm eps 1e-6,
    dropout 0, attention dropout 0, drop_path_rate 0.1 linearly increasing over all blocks.
    Initialisation as SegFormer: trunc-normal(0.02) Linear weights with zero bias, LayerNorm 1 / 0,
    Conv2d Normal(0, sqrt(2 / fan_out)) with fan_out = k*k*out_channels / groups and zero bias.

    Attributes:
        out_channels: channels of the 4 outputs (= ``embed_dims``).
        strides: output strides of the 4 outputs, (4, 8, 16, 32).
        grad_checkpointing: activation checkpointing per block in training (``set_grad_checkpointing``,
            ``model.checkpoint_encoder``; src/models/checkpointing.py).
    """

    def __init__(
        self,
        *,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (3, 6, 40, 3),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
        layer_norm_eps: float = 1e-6,
        embed_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        for name, seq in (("depths", depths), ("num_heads", num_heads), ("mlp_ratios", mlp_ratios)):
            if len(seq) != 4:
                raise ValueError(f"{name} must have 4 entries, got {list(seq)}")
        if len(embed_dims) != 4 or len(sr_ratios) != 4:
            raise ValueError("embed_dims and sr_ratios must have 4 entries")
        self.depths = list(depths)
        self.grad_checkpointing = False
        self.out_channels: list[int] = list(embed_dims)
        self.strides: list[int] = [4, 8, 16, 32]

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        cur = 0
        prev_dim = in_chans
        for i in range(4):
            patch_embed = OverlapPatchEmbed(
                in_chans=prev_dim,
                embed_dim=embed_dims[i],
                patch_size=7 if i == 0 else 3,
                stride=4 if i == 0 else 2,
                norm_eps=embed_norm_eps,
            )
            blocks = nn.ModuleList(
                MiTBlock(
                    dim=embed_dims[i],
                    num_heads=num_heads[i],
                    mlp_ratio=mlp_ratios[i],
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[cur + j],
                    sr_ratio=sr_ratios[i],
                    norm_eps=layer_norm_eps,
                    attn_norm_eps=embed_norm_eps,
                )
                for j in range(depths[i])
            )
            # Names patch_embed{i}, block{i}, norm{i} as in SegFormer's checkpoints.
            self.add_module(f"patch_embed{i + 1}", patch_embed)
            self.add_module(f"block{i + 1}", blocks)
            self.add_module(f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=layer_norm_eps))
            cur += depths[i]
            prev_dim = embed_dims[i]

        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def reset_drop_path(self, drop_path_rate: float) -> None:
        """Re-set the linear stochastic-depth schedule (0 -> ``drop_path_rate`` over all blocks)."""
        dpr = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        blocks = [blk for i in range(4) for blk in getattr(self, f"block{i + 1}")]
        for blk, p in zip(blocks, dpr, strict=True):
            blk.drop_path = DropPath(p) if p > 0.0 else nn.Identity()

    @staticmethod
    def convert_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Hugging Face SegFormer keys (4.x hub files, transformers >= 5) -> ours; others pass through."""
        if is_hf_segformer(state_dict):
            return convert_hf_segformer(state_dict)
        return dict(state_dict)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every block while training (src/models/checkpointing.py)."""
        self.grad_checkpointing = bool(enable)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs: list[Tensor] = []
        ckpt = use_checkpoint(self, self.grad_checkpointing)
        for i in range(1, 5):
            tokens, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                tokens = checkpoint_call(blk, blk, tokens, h, w) if ckpt else blk(tokens, h, w)
            tokens = getattr(self, f"norm{i}")(tokens)
            x = _tokens_to_map(tokens, h, w).contiguous()
            outs.append(x)
        return outs


_HEADS = (1, 2, 5, 8)
_SR = (8, 4, 2, 1)
_MLP = (4, 4, 4, 4)
_SMALL = (64, 128, 320, 512)

#: Published SegFormer configurations (daformer_mic.md §4.1 for B5).
MIT_CONFIGS: dict[str, dict[str, Any]] = {
    "mit_b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "mit_b1": dict(embed_dims=_SMALL, depths=(2, 2, 2, 2)),
    "mit_b2": dict(embed_dims=_SMALL, depths=(3, 4, 6, 3)),
    "mit_b3": dict(embed_dims=_SMALL, depths=(3, 4, 18, 3)),
    "mit_b4": dict(embed_dims=_SMALL, depths=(3, 8, 27, 3)),
    "mit_b5": dict(embed_dims=_SMALL, depths=(3, 6, 40, 3)),
}


def _build(name: str, overrides: dict[str, Any]) -> MixVisionTransformer:
    cfg: dict[str, Any] = dict(
        num_heads=_HEADS, sr_ratios=_SR, mlp_ratios=_MLP, qkv_bias=True, layer_norm_eps=1e-6
    )
    cfg.update(MIT_CONFIGS[name])
    cfg.update(overrides)
    return MixVisionTransformer(**cfg)


def mit_b0(**overrides: Any) -> MixVisionTransformer:
    """MiT-B0: dims (32, 64, 160, 256), depths (2, 2, 2, 2); ~3.3M parameters."""
    return _build("mit_b0", overrides)


def mit_b1(**overrides: Any) -> MixVisionTransformer:
    """MiT-B1: dims (64, 128, 320, 512), depths (2, 2, 2, 2)."""
    return _build("mit_b1", overrides)


def mit_b2(**overrides: Any) -> MixVisionTransformer:
    """MiT-B2: dims (64, 128, 320, 512), depths (3, 4, 6, 3)."""
    return _build("mit_b2", overrides)


def mit_b3(**overrides: Any) -> MixVisionTransformer:
    """MiT-B3: dims (64, 128, 320, 512), depths (3, 4, 18, 3)."""
    return _build("mit_b3", overrides)


def mit_b4(**overrides: Any) -> MixVisionTransformer:
    """MiT-B4: dims (64, 128, 320, 512), depths (3, 8, 27, 3)."""
    return _build("mit_b4", overrides)


def mit_b5(**overrides: Any) -> MixVisionTransformer:
    """MiT-B5 (the DAFormer encoder): dims (64, 128, 320, 512), depths (3, 6, 40, 3); ~81.4M parameters."""
    return _build("mit_b5", overrides)

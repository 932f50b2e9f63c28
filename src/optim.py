"""DAFormer optimiser and learning-rate schedule (daformer_mic.md §5).

- AdamW, lr 6e-5, betas (0.9, 0.999), weight decay 0.01.
- mmcv `paramwise_cfg`: parameters whose name contains "head" get lr x10 (weight decay kept: the
  reference matches "head" before "norm", so decoder BN is decayed too); other parameters whose name
  contains "norm" or "pos_block" get no weight decay (backbone LayerNorms).
- Linear warm-up for 1500 iterations from warmup_ratio 1e-6, then poly decay with power 1.0 to 0:
  lr_t = base * (1 - t/T)^p * (1 - (1 - t/W)(1 - ratio)) while t < W, updated every iteration.
- Two-frame models (src/models/temporal_aggregation.py): the flow-guided fusion conv (``sf_layer``) gets its
  own group ``fusion`` at lr x the model's ``fusion_lr_mult`` (udass.md §2.5a: backbone lr, sf_layer lr,
  classifiers 10x lr).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    head_lr_mult: float = 10.0,
    head_key: str = "head",
    no_decay_keys: tuple[str, ...] = ("norm", "pos_block"),
    fusion_key: str = "sf_layer",
    fusion_lr_mult: float | None = None,
) -> list[dict]:
    """mmcv-style groups: 'head' first (lr x head_lr_mult, decay kept), then no-decay keys.

    Parameters named ``fusion_key`` (a two-frame model's fusion conv) form the group ``fusion`` at
    ``lr x fusion_lr_mult`` (None: the model's ``fusion_lr_mult`` attribute, else 1).
    """
    if fusion_lr_mult is None:
        fusion_lr_mult = float(getattr(model, "fusion_lr_mult", 1.0))
    groups = {"head": [], "no_decay": [], "default": [], "fusion": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if fusion_key in name:
            groups["fusion"].append(p)
        elif head_key in name:
            groups["head"].append(p)
        elif any(k in name for k in no_decay_keys):
            groups["no_decay"].append(p)
        else:
            groups["default"].append(p)
    out = [
        {"params": groups["default"], "lr": lr, "weight_decay": weight_decay, "name": "default"},
        {"params": groups["no_decay"], "lr": lr, "weight_decay": 0.0, "name": "no_decay"},
        {"params": groups["head"], "lr": lr * head_lr_mult, "weight_decay": weight_decay, "name": "head"},
        {
            "params": groups["fusion"],
            "lr": lr * fusion_lr_mult,
            "weight_decay": weight_decay,
            "name": "fusion",
        },  # fmt: skip
    ]
    return [g for g in out if g["params"]]


def build_adamw(
    model: nn.Module,
    *,
    lr: float = 6e-5,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.01,
    head_lr_mult: float = 10.0,
) -> torch.optim.AdamW:
    groups = param_groups(model, lr=lr, weight_decay=weight_decay, head_lr_mult=head_lr_mult)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


@dataclass
class PolyWarmup:
    """Multiplicative factor for LambdaLR: linear warm-up (mmcv 'linear', ratio 1e-6) then poly decay.

    A dataclass, not a lambda, so LambdaLR's state_dict holds plain numbers (checkpoints stay
    loadable with `weights_only=True`).
    """

    max_steps: int
    warmup_steps: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        progress = min(step, self.max_steps) / max(self.max_steps, 1)
        factor = (1.0 - progress) ** self.power * (1.0 - self.min_lr_ratio) + self.min_lr_ratio
        if step < self.warmup_steps:
            factor *= 1.0 - (1.0 - step / self.warmup_steps) * (1.0 - self.warmup_ratio)
        return factor

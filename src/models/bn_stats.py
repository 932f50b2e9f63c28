"""BatchNorm running statistics left unchanged by a forward pass: :class:`BNStatsFrozen`.

Inside the context every BatchNorm layer of ``module`` that tracks running statistics still normalises a
train-mode forward with the statistics of its batch (the forward and its gradients are exactly those of train
mode), but its running mean / variance are not updated (momentum 0) and ``num_batches_tracked`` is restored on
exit. Users:

- activation checkpointing's recomputation (src/models/checkpointing.py), which counts no forward twice;
- ``uda.mask.update_bn_stats=false`` (src/uda/masking/mic.py): the masked-image forward of MIC / OMUDA's CAM
  then leaves the running statistics, which the student is evaluated with, to the source and mixed batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["BNStatsFrozen", "running_stat_batchnorms"]


def running_stat_batchnorms(module: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``module`` that keep running statistics (an eval-mode forward uses them)."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


class BNStatsFrozen:
    """Inside: BN momentum 0 (running statistics unchanged); ``num_batches_tracked`` restored on exit."""

    def __init__(self, module: nn.Module) -> None:
        self.bns = running_stat_batchnorms(module)
        self.saved: list[tuple[Any, torch.Tensor | None]] = []

    def __enter__(self) -> BNStatsFrozen:
        self.saved = []
        for m in self.bns:
            nbt = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
            self.saved.append((m.momentum, nbt))
            m.momentum = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        for m, (momentum, nbt) in zip(self.bns, self.saved, strict=True):
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)

"""Activation checkpointing of encoder blocks: the memory option ``model.checkpoint_encoder`` (our addition).

HRDA-size training (MiT-B5, 1024 crops: a 512 context view and a 512 detail crop per forward, three student
passes a step) needed 22.5 GB on a 24 GB Titan RTX in the reference (daformer_mic.md §7.3), and users report
out-of-memory on 24 GB cards (§8.3). With ``model.checkpoint_encoder=true`` every MiT block (ResNet: every
stage ``layer1..layer4``) runs under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): its inner
activations are not kept after the forward pass but recomputed during the backward pass, trading about one
extra encoder forward for most of the encoder's activation memory.

Exactness: gradients, and every buffer, equal those of an un-checkpointed run (a test):

- the random state (DropPath, dropout) of the forward is restored for the recomputation
  (``preserve_rng_state``), and the recomputation does not advance the global random stream;
- BatchNorm in train mode would update its running statistics a second time while recomputing: during the
  recomputation its momentum is 0 (running mean/var unchanged) and ``num_batches_tracked`` is restored.

Checkpointing is active only in training mode with gradients enabled, so the EMA teacher, the frozen ImageNet
encoder of the feature distance and every inference run exactly as without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from src.models.bn_stats import BNStatsFrozen

__all__ = ["checkpoint_call", "use_checkpoint"]


def use_checkpoint(module: nn.Module, enabled: bool) -> bool:
    """Whether a checkpointed call should be used now: enabled, training mode and gradients on."""
    return enabled and module.training and torch.is_grad_enabled()


def checkpoint_call(fn: Callable[..., Any], module: nn.Module, *args: Any) -> Any:
    """``fn(*args)`` under non-reentrant activation checkpointing; ``module`` holds ``fn``'s BN layers."""

    def contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), BNStatsFrozen(module)

    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True, context_fn=contexts)

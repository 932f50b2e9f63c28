"""Per-stage wall-clock timing of the training step (scripts/benchmark.py switches it on)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch


class StageTimer:
    """`with timer("teacher"): ...` adds the elapsed seconds to `timer.totals["teacher"]`.

    Disabled (the default during training) it costs one attribute check. On CUDA it synchronises
    before and after each stage so the numbers are the stage's own time, not queued work.
    """

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        self.totals.clear()
        self.counts.clear()

    @contextmanager
    def __call__(self, name: str):
        if not self.enabled:
            yield
            return
        sync = torch.cuda.is_available() and torch.cuda.is_initialized()
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                torch.cuda.synchronize()
            self.totals[name] += time.perf_counter() - t0
            self.counts[name] += 1

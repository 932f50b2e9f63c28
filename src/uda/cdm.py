"""OMUDA CDM (class decoupling masking), our design, reference/omuda.md §4.3.

OMUDA's abstract only says that CDM "mitigates noisy pseudo-labels by explicitly modelling class-wise
uncertainty" (omuda.md §1.2); the rules below are the team's design of §4.3. CDM replaces DACS's scalar
pseudo-label weight q (``src.uda.pseudo_label.PseudoLabeler``, daformer_mic.md §1.2) by a per-pixel weight
whose threshold is decoupled per class, so that hard or rare classes keep their own more-certain part
instead of being wiped out by one global confidence level. It has the same call as ``PseudoLabeler`` and
its weight is used everywhere DACS's q was: the ClassMix target pixels, the masked (MIC/CAM) loss and FDM's
target cells.

``variant="entropy"`` (default, §4.3):
- u = H(p) / log C, the per-pixel normalised entropy in [0, 1] (``uncertainty="maxprob"``: u = 1 - p_max).
- Per class c (pixels with pseudo-label c inside the valid region): batch mean m_c and standard deviation
  s_c of u; EMA mu_c <- momentum*mu_c + (1-momentum)*m_c, sigma_c likewise with s_c (momentum 0.99),
  **only for classes present in the batch**. mu_c starts at 0 and sigma_c at 1 (§4.3 warm-up).
- Keep u <= t_c = mu_c + kappa*sigma_c (kappa = 0.5) for the pixel's class.
- Floor: in every image, each present class keeps at least its ``floor`` (0.2) least-uncertain fraction:
  the ceil(floor*n) most certain pixels, plus ties with the last one (CBST-style, §4.3).
- ``soft=True``: rejected pixels get exp(-(u - t_c) / sigma_c) instead of 0 (§4.3 soft option).

Variants (§4.3 B and C), with ``floor`` and ``soft`` applying to the entropy variant's rules as above (the
variant configs set floor 0 to be pure; soft is only defined for ``entropy``):
- ``"freematch"`` (FreeMatch self-adaptive thresholds, omuda.md §3.3): tau <- m*tau + (1-m)*mean(p_max),
  p~_c <- m*p~_c + (1-m)*mean(p_c) over the valid pixels (m = 0.999, both initialised to 1/C as in the
  paper), tau_c = tau * p~_c / max_k p~_k, keep p_max >= tau_{y_hat}. The floor, if on, uses u = 1 - p_max.
- ``"cbst"`` (CBST class percentiles, omuda.md §3.2): the portion p ramps linearly 0.2 -> 0.5 over
  ``cbst_ramp_steps``; per class the batch threshold is the confidence at rank floor(p*N_c) of the class's
  pixels sorted by descending p_max, and k_c is its EMA (``momentum``, present classes only, init 0);
  keep p_max >= k_{y_hat}. The pseudo-label stays the teacher's argmax (CBST proper re-labels with
  argmax p_c / k_c; we keep one label for all modules).

Common rules:
- Update then threshold (as FreeMatch): in training mode the statistics are first updated with the batch,
  then the weights computed; in eval mode the buffers are only read.
- Warm-up: for ``step < warmup_steps`` (1500, the lr warm-up period, §4.3) the returned weight is exactly
  DACS's scalar q (``PseudoLabeler``). In the first design the statistics are updated during the warm-up:
  after the papers' 1500 steps the initial values are forgotten (0.99^1500 ~ 3e-7), after a short warm-up
  they are not (0.99^50 = 0.61), and what is learned is the untrained teacher's; hence ``first_batch_init``
  and ``stats_after_warmup`` below. ``step=None`` uses the internal counter ``num_steps`` (training calls so
  far, a buffer, so a resumed run continues it).
- Pseudo-label margins (``ignore_top`` / ``ignore_bottom`` rows) and the crop-aware ``valid`` mask zero the
  weight as in ``PseudoLabeler`` and also exclude those pixels from the statistics (our choice).
- State: every running statistic is a registered buffer (saved in checkpoints, moved with the module).
  Under ``torch.distributed`` the per-class batch sums (counts, sums, sums of squares; FreeMatch's sums;
  CBST's count-weighted thresholds) are all-reduced before the EMA, so every rank keeps identical buffers.
  With several ranks CBST's batch threshold is the count-weighted mean of the per-rank percentiles, an
  approximation of the percentile over all ranks (exact on one rank).
- ``first_batch_init`` (default True, our improvement): a class's first batch sets its statistics (mu_c,
  sigma_c; CBST's k_c) directly instead of averaging them into the initial 0 / 1 / 0, which would otherwise
  linger (0.99^100 = 37 % after a 100-step warm-up, as in the short synthetic runs). Classes never seen keep
  the initial values. ``False`` is the plain EMA of the design. FreeMatch keeps its paper's 1/C start.
- Logging: ``last_keep_rate`` (C,) = share of each pseudo-label class's valid pixels whose *applied* weight is
  above 0 (the host's during the warm-up; NaN for absent classes), ``last_weight_mean`` the applied weight's
  mean, ``last_threshold`` (C,) the class thresholds (t_c, tau_c or k_c).

Revision after the synthetic ablations (issue 17; the options default to the first design, the config
``conf/uda/pseudo/cdm.yaml`` turns them on):
- ``stats_after_warmup``: the statistics are only updated from ``warmup_steps`` on; the random step-0 teacher
  (mu ~ 1, sigma ~ 0 for most classes) no longer sets thresholds that never move again.
- ``shrinkage`` k: the entropy thresholds use (n_c mu_c + k mu_all) / (n_c + k) (sigma likewise), n_c the
  class's number of updates, mu_all / sigma_all the statistics pooled over all classes: a class seen in few
  batches leans on the pooled prior instead of on one noisy batch.
- ``reliability``: the weight is multiplied by rho_c = pbar_c / max_k pbar_k, pbar_c the EMA (``momentum``) of
  the teacher's mean confidence on pixels it labels c: the within-class rule ranks pixels, rho_c says how
  much a class is worth, so a class the teacher is mostly unsure of is not kept at full weight.
- ``budget``: ``free`` (the first design: CDM's 0/1 weight, which *added* weight: ~0.9 of the pixels at 1
  where DACS's q was 0.3), ``remove`` (w = q x w_CDM, pixel by pixel never above the host), ``host``
  (w = w_CDM x min(1, sum q / sum w_CDM): CDM decides which pixels carry the host's total weight, never more
  in total and never above 1 a pixel).
- ``ramp_steps``: after the warm-up the applied weight goes linearly from the host's to CDM's over this many
  steps (``conf``: a fraction of the run, src/utils/phases.py).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from src.uda.pseudo_label import PseudoLabeler
from src.utils.phases import as_step

VARIANTS = ("entropy", "freematch", "cbst")
BUDGETS = ("free", "remove", "host")


def _all_reduce_sum(t: Tensor) -> Tensor:
    """Sum over DDP ranks in place (no-op without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _group_sort(values: Tensor, groups: Tensor, num_groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sort 1-D ``values`` ascending within integer ``groups`` in [0, num_groups) (exact, two stable sorts).

    Returns (values sorted by (group, value), group start offsets (G,), group counts (G,)).
    """
    by_value = torch.argsort(values, stable=True)
    by_group = torch.argsort(groups[by_value], stable=True)
    v_sorted = values[by_value][by_group]
    counts = torch.bincount(groups, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    return v_sorted, starts, counts


class ClassDecoupledPseudoLabeler(nn.Module):
    """OMUDA class decoupling masking (CDM), our design, reference/omuda.md §4.3.

    ``__call__(probs, valid=None, *, step=None) -> (y_hat long (B,H,W), w float32 (B,H,W) in [0, 1],
    p_max float32 (B,H,W))``, the call of DACS's ``PseudoLabeler``. Defaults (§4.3): kappa 0.5, momentum
    0.99, floor 0.2, hard mask, warm-up 1500 steps with DACS's q at threshold 0.968; FreeMatch m = 0.999;
    CBST portion 0.2 -> 0.5; ``first_batch_init`` True is our improvement (see the module docstring).
    """

    def __init__(
        self,
        *,
        threshold: float = 0.968,
        kappa: float = 0.5,
        momentum: float = 0.99,
        floor: float = 0.2,
        soft: bool = False,
        warmup_steps: int = 1500,
        num_classes: int = 19,
        ignore_top: int = 0,
        ignore_bottom: int = 0,
        variant: str = "entropy",
        uncertainty: str = "entropy",
        freematch_momentum: float = 0.999,
        cbst_start: float = 0.2,
        cbst_end: float = 0.5,
        cbst_ramp_steps: int = 40000,
        first_batch_init: bool = True,
        stats_after_warmup: bool = False,
        shrinkage: float = 0.0,
        reliability: bool = False,
        budget: str = "free",
        ramp_steps: int = 0,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if uncertainty not in ("entropy", "maxprob"):
            raise ValueError(f"uncertainty must be 'entropy' or 'maxprob', got {uncertainty!r}")
        if soft and variant != "entropy":
            raise ValueError("soft=True is only defined for variant='entropy'")
        if not 0.0 <= momentum < 1.0 or not 0.0 <= freematch_momentum < 1.0:
            raise ValueError("momentum and freematch_momentum must be in [0, 1)")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1], got {floor}")
        if not 0.0 <= cbst_start <= 1.0 or not 0.0 <= cbst_end <= 1.0:
            raise ValueError("cbst_start / cbst_end must be in [0, 1]")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
        if shrinkage < 0 or ramp_steps < 0:
            raise ValueError("shrinkage and ramp_steps must be >= 0")
        self.threshold = float(threshold)
        self.kappa = float(kappa)
        self.momentum = float(momentum)
        self.floor = float(floor)
        self.soft = bool(soft)
        self.warmup_steps = as_step(warmup_steps, "warmup_steps")
        self.num_classes = int(num_classes)
        self.ignore_top = int(ignore_top)
        self.ignore_bottom = int(ignore_bottom)
        self.variant = variant
        self.uncertainty = uncertainty
        self.freematch_momentum = float(freematch_momentum)
        self.cbst_start = float(cbst_start)
        self.cbst_end = float(cbst_end)
        self.cbst_ramp_steps = max(1, int(cbst_ramp_steps))
        self.first_batch_init = bool(first_batch_init)
        self.stats_after_warmup = bool(stats_after_warmup)
        self.shrinkage = float(shrinkage)
        self.reliability = bool(reliability)
        self.budget = budget
        self.ramp_steps = as_step(ramp_steps, "ramp_steps")
        # DACS's scalar weight for the warm-up (exactly the host's pseudo-labeler).
        self.dacs = PseudoLabeler(threshold=threshold, ignore_top=ignore_top, ignore_bottom=ignore_bottom)
        c = self.num_classes
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros(c, dtype=torch.long))  # EMA updates per class
        if variant == "entropy":
            self.register_buffer("mu", torch.zeros(c))
            self.register_buffer("sigma", torch.ones(c))
        elif variant == "freematch":
            self.register_buffer("tau", torch.full((), 1.0 / c))
            self.register_buffer("p_class", torch.full((c,), 1.0 / c))
        else:
            self.register_buffer("cbst_threshold", torch.zeros(c))
        # Buffers of the options, only when on (checkpoints without them keep loading):
        if variant == "entropy" and self.shrinkage > 0:  # the pooled prior rarely seen classes are shrunk to
            self.register_buffer("mu_all", torch.zeros(()))
            self.register_buffer("sigma_all", torch.ones(()))
        if self.reliability:  # EMA of the mean teacher confidence per pseudo-label class
            self.register_buffer("conf_mean", torch.zeros(c))
        self.last_keep_rate: Tensor | None = None
        self.last_threshold: Tensor | None = None
        self.last_weight_mean: Tensor | None = None

    # ------------------------------------------------------------------ helpers
    def region(self, shape: tuple[int, int, int], device: torch.device, valid: Tensor | None) -> Tensor:
        """(B,H,W) bool: pixels inside the pseudo-label margins and the crop-aware valid mask."""
        b, h, w = shape
        r = torch.ones(b, h, w, dtype=torch.bool, device=device)
        if self.ignore_top > 0:
            r[:, : self.ignore_top] = False
        if self.ignore_bottom > 0:
            r[:, max(0, h - self.ignore_bottom) :] = False
        if valid is not None:
            v = valid.squeeze(1) if valid.dim() == 4 else valid
            if v.shape != r.shape:
                raise ValueError(f"valid mask shape {tuple(v.shape)} != pseudo-label shape {tuple(r.shape)}")
            r &= v.to(device) > 0
        return r

    def entropy(self, p: Tensor) -> Tensor:
        """Normalised entropy H(p) / log C in [0, 1], (B,H,W)."""
        return -(p * p.clamp_min(1e-12).log()).sum(1) / math.log(p.shape[1])

    def cbst_portion(self, step: int) -> float:
        """CBST portion p(step): linear ramp cbst_start -> cbst_end over cbst_ramp_steps."""
        a = min(1.0, max(0.0, step / self.cbst_ramp_steps))
        return self.cbst_start + (self.cbst_end - self.cbst_start) * a

    def floor_mask(self, score: Tensor, y: Tensor, region: Tensor) -> Tensor:
        """(B,H,W) bool: per image and class, the ceil(floor*n) lowest-``score`` pixels (and their ties)."""
        b = y.shape[0]
        c = self.num_classes
        g = (torch.arange(b, device=y.device).view(b, 1, 1) * c + y).masked_fill(~region, b * c)
        score = score.float()
        v_sorted, starts, counts = _group_sort(score.reshape(-1), g.reshape(-1), b * c + 1)
        k = torch.ceil(self.floor * counts.double() - 1e-6).long().clamp(min=1)
        kth = v_sorted[(starts + k - 1).clamp(max=v_sorted.numel() - 1)]  # k-th smallest score of each group
        kth = torch.where(counts > 0, kth, torch.full_like(kth, -float("inf")))
        kth[-1] = -float("inf")  # the out-of-region group keeps nothing
        return score <= kth[g]

    # ------------------------------------------------------------------ statistics
    def _update_entropy(self, u: Tensor, y: Tensor, region: Tensor) -> None:
        c = self.num_classes
        yr, ur = y[region], u[region].double()
        stats = torch.stack(
            [
                torch.bincount(yr, minlength=c).double(),
                torch.bincount(yr, weights=ur, minlength=c),
                torch.bincount(yr, weights=ur * ur, minlength=c),
            ]
        )
        _all_reduce_sum(stats)
        n, s, q = stats
        present = n > 0
        mean = s / n.clamp_min(1)
        std = (q / n.clamp_min(1) - mean * mean).clamp_min(0).sqrt()
        m = self.momentum
        mu_new = m * self.mu.double() + (1 - m) * mean
        sigma_new = m * self.sigma.double() + (1 - m) * std
        if self.first_batch_init:
            first = self.count == 0
            mu_new, sigma_new = torch.where(first, mean, mu_new), torch.where(first, std, sigma_new)
        self.mu.copy_(torch.where(present, mu_new, self.mu.double()))
        self.sigma.copy_(torch.where(present, sigma_new, self.sigma.double()))
        n_all = n.sum()
        if self.shrinkage > 0 and n_all > 0:
            mean_all = s.sum() / n_all
            std_all = (q.sum() / n_all - mean_all * mean_all).clamp_min(0).sqrt()
            if self.first_batch_init and bool((self.count == 0).all()):
                self.mu_all.copy_(mean_all)
                self.sigma_all.copy_(std_all)
            else:
                self.mu_all.copy_(m * self.mu_all.double() + (1 - m) * mean_all)
                self.sigma_all.copy_(m * self.sigma_all.double() + (1 - m) * std_all)
        self.count += present.long()

    def _update_confidence(self, p_max: Tensor, y: Tensor, region: Tensor) -> None:
        """EMA of the mean teacher confidence of each pseudo-label class (the ``reliability`` term)."""
        c = self.num_classes
        yr = y[region]
        stats = torch.stack(
            [
                torch.bincount(yr, minlength=c).double(),
                torch.bincount(yr, weights=p_max[region].double(), minlength=c),
            ]
        )
        _all_reduce_sum(stats)
        n, s = stats
        present = n > 0
        mean = s / n.clamp_min(1)
        new = self.momentum * self.conf_mean.double() + (1 - self.momentum) * mean
        new = torch.where(self.conf_mean == 0, mean, new)  # a class's first batch sets it
        self.conf_mean.copy_(torch.where(present, new, self.conf_mean.double()))

    def _update_freematch(self, p: Tensor, p_max: Tensor, y: Tensor, region: Tensor) -> None:
        c = self.num_classes
        pr = p.permute(1, 0, 2, 3)[:, region].double()  # (C, N)
        n_class = torch.bincount(y[region], minlength=c).double()
        stats = torch.cat([p_max[region].double().sum().view(1), pr.sum(1), n_class])  # (1 + 2C,)
        _all_reduce_sum(stats)
        n_class = stats[1 + c :]
        n = n_class.sum()
        if n <= 0:
            return
        m = self.freematch_momentum
        self.tau.copy_(m * self.tau.double() + (1 - m) * stats[0] / n)
        self.p_class.copy_(m * self.p_class.double() + (1 - m) * stats[1 : 1 + c] / n)
        self.count += (n_class > 0).long()

    def _update_cbst(self, p_max: Tensor, y: Tensor, region: Tensor, step: int) -> None:
        c = self.num_classes
        yr = y[region]
        counts = torch.bincount(yr, minlength=c)
        nk = torch.zeros(c, dtype=torch.float64, device=y.device)
        if yr.numel() > 0:
            # Descending p_max within each class; rank floor(p * N_c), at most the last pixel.
            v_sorted, starts, counts = _group_sort(-p_max[region].float(), yr, c)
            rank = torch.floor(self.cbst_portion(step) * counts.double() + 1e-9).long()
            rank = torch.minimum(rank, (counts - 1).clamp(min=0))
            k_batch = -v_sorted[(starts + rank).clamp(max=v_sorted.numel() - 1)].double()  # conf at that rank
            nk = torch.where(counts > 0, counts.double() * k_batch, nk)
        stats = torch.stack([nk, counts.double()])
        _all_reduce_sum(stats)
        nk, n = stats
        present = n > 0
        k_mean = nk / n.clamp_min(1)
        m = self.momentum
        k_old = self.cbst_threshold.double()
        k_new = m * k_old + (1 - m) * k_mean
        if self.first_batch_init:
            k_new = torch.where(self.count == 0, k_mean, k_new)
        self.cbst_threshold.copy_(torch.where(present, k_new, k_old))
        self.count += present.long()

    # ------------------------------------------------------------------ call
    def class_thresholds(self) -> Tensor:
        """(C,) current per-class thresholds: t_c on u (entropy), tau_c or k_c on p_max."""
        if self.variant == "entropy":
            mu, sigma = self.mu, self.sigma
            if self.shrinkage > 0:  # a class seen in few batches leans on the pooled statistics
                n = self.count.to(mu.dtype)
                k = self.shrinkage
                mu = (n * mu + k * self.mu_all) / (n + k)
                sigma = (n * sigma + k * self.sigma_all) / (n + k)
            return mu + self.kappa * sigma
        if self.variant == "freematch":
            return self.tau * self.p_class / self.p_class.max().clamp_min(1e-12)
        return self.cbst_threshold.clone()

    @torch.no_grad()
    def forward(
        self, probs: Tensor, valid: Tensor | None = None, *, step: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """probs (B,C,H,W) -> (ŷ long (B,H,W), w float32 (B,H,W) in [0, 1], p_max float32 (B,H,W))."""
        p = probs.detach().float()
        if p.shape[1] != self.num_classes:
            raise ValueError(f"probs have {p.shape[1]} classes, CDM was built for {self.num_classes}")
        p_max, y = p.max(dim=1)
        region = self.region(tuple(y.shape), y.device, valid)
        t = int(self.num_steps) if step is None else int(step)
        # The host's weight (DACS's scalar q, same margins): the warm-up's weight, the ramp's start and the
        # budget CDM redistributes.
        _, w_host, _ = self.dacs(probs, valid)
        update = self.training and (t >= self.warmup_steps or not self.stats_after_warmup)

        if self.variant == "entropy":
            u = self.entropy(p) if self.uncertainty == "entropy" else 1.0 - p_max
            if update:
                self._update_entropy(u, y, region)
        else:
            u = 1.0 - p_max
            if update and self.variant == "freematch":
                self._update_freematch(p, p_max, y, region)
            elif update:
                self._update_cbst(p_max, y, region, t)
        if update and self.reliability:
            self._update_confidence(p_max, y, region)

        thr = self.class_thresholds()
        if self.variant == "entropy":
            keep = u <= thr[y]
        else:
            keep = p_max >= thr[y]
        if self.floor > 0:
            keep |= self.floor_mask(u, y, region)
        w = keep.float()
        if self.soft:
            sig = self.sigma.clamp_min(1e-6)[y]
            w = torch.where(keep, w, torch.exp(-(u - thr[y]) / sig).clamp(0.0, 1.0))
        if self.reliability and bool((self.conf_mean > 0).any()):  # type: ignore[operator]
            rel = self.conf_mean / self.conf_mean.max().clamp_min(1e-12)  # (C,) in [0, 1]
            w = w * rel[y].to(w.dtype)
        w = w * region.float()
        w = self._apply_budget(w, w_host)

        if self.training:
            self.num_steps += 1
        if t < self.warmup_steps:
            applied = w_host
        else:
            r = 1.0 if self.ramp_steps <= 0 else min(1.0, (t - self.warmup_steps + 1) / self.ramp_steps)
            applied = w if r >= 1.0 else (1.0 - r) * w_host + r * w
        # Logged: what is applied (during the warm-up, the host's weight), per pseudo-label class.
        c = self.num_classes
        n = torch.bincount(y[region], minlength=c).float()
        kept = torch.bincount(y[region], weights=(applied[region] > 0).float(), minlength=c).float()
        self.last_keep_rate = torch.where(n > 0, kept / n.clamp_min(1), torch.full_like(n, float("nan")))
        self.last_weight_mean = applied.mean().detach()
        self.last_threshold = thr.detach().clone()
        return y, applied, p_max

    def _apply_budget(self, w: Tensor, w_host: Tensor) -> Tensor:
        """``free``: CDM's weight as is; ``remove``: the host's weight times CDM's (never above it, pixel by
        pixel); ``host``: CDM decides which pixels carry the host's total weight (scaled down when it would
        exceed it; never above 1 a pixel, never more in total than the host)."""
        if self.budget == "free":
            return w
        if self.budget == "remove":
            return w_host * w
        total, host = w.sum(), w_host.sum()
        return w * torch.clamp(host / total.clamp_min(1e-12), max=1.0) if total > 0 else w

"""OMUDA CAM (context-aware masking), our design, reference/omuda.md §4.1.

OMUDA's public abstract only says that CAM "adaptively distinguishes foreground from background to balance
global context and local details" (omuda.md §1.2); the rules below are the team's design of §4.1, built on
MIC's block masking (``src.uda.masking.block``, daformer_mic.md §2).

1. Cells: the MIC grid of round(H/b) x round(W/b) cells, each mapped to its pixels exactly as MIC's nearest
   upsampling does. Foreground pixel = the teacher's pseudo-label is a thing class (DAFormer's 10 thing
   classes, ``src.data.classes.THING_CLASSES``) **and** its confidence p_max >= ``confidence_threshold``.
   Foreground cell: foreground fraction of its pixels phi_g >= ``fg_threshold`` (theta_fg = 0.1).
2. Adaptive per-image ratios, rho = fraction of foreground cells of the image:
   r_bg = r / (rho*beta + 1 - rho), r_fg = beta * r_bg, clipped to ``clip`` = [0, 0.95]. The expected masked
   fraction of the image, rho*r_fg + (1-rho)*r_bg, is r whatever the scene (omuda.md §4.1 step 2).
3. Granularity (default on): background cells are masked whole (block size b), foreground cells are split
   into (b/s)^2 sub-blocks of ``sub_block_size`` s = b // 2 that are masked independently at r_fg.
4. The keep-mask M (1 = visible) multiplies the normalised image, as MIC (masked pixels = mean colour).

Random numbers (a documented contract, tested): the first draw is always MIC's, ``torch.rand((B, 1, gh, gw),
generator)``, and a cell is kept iff u > its ratio. With beta = 1 and ``granularity=False`` (or without a
pseudo-label) the mask is therefore *identical* to ``BlockMasker``'s for the same generator state. With
granularity on and a pseudo-label given, one more draw ``torch.rand((B, 1, gh*k, gw*k))`` (k = b // s)
follows, whatever the number of foreground cells (so the generator's consumption does not depend on the
image content); its values decide the foreground sub-blocks.

Our choices and improvements on the design (omuda.md §4.1 leaves them open):
- beta: the class keeps the design's default 0.5 (foreground masked half as often); the configs
  (``conf/uda/mask/cam.yaml``) use 2, the design's other hypothesis (things masked more, so that they must be
  inferred from context), chosen by the ablation the design asks for, on the synthetic benchmark's dev split:
  0.5 costs 1.6 mIoU against MIC there (1.8 on the reported split), 2 is MIC's equal (README).
- ``confidence_threshold`` (the optional tau gate of §4.1 step 1): default 0.968, DACS's pseudo-label
  threshold (daformer_mic.md §1.2), so a pixel defines foreground exactly when it counts as confident in
  DACS's quality estimate. Early in training few pixels pass, rho ~ 0 and CAM falls back to MIC's uniform
  masking, a safe degradation. ``None`` disables the gate (then ``confidence`` is ignored).
- ``rebalance`` (default True, our improvement): the design's plain clipping breaks the expected ratio when a
  clip binds (beta = 0.5, rho = 0.7: r_bg = 1.08 -> 0.95 and the expectation falls from 0.70 to 0.62). With
  ``rebalance`` the ratio that did not hit a bound is re-solved from the total,
  r_fg = (r - (1-rho)*r_bg) / rho (or r_bg symmetrically), then clipped. This keeps E[ratio] = r whenever it
  is reachable, at the price of a weaker fg/bg contrast in thing-dominated images. ``False`` is the plain
  design (both ratios from the formula, then clipped).
- Per-image statistics of the last call are kept for logging: ``last_rho``, ``last_r_fg``, ``last_r_bg``
  (B,) and ``last_fg_cells`` (B, gh, gw) bool.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from src.data.classes import THING_CLASSES


def adaptive_ratios(
    ratio: float,
    rho: Tensor,
    beta: float,
    *,
    clip: tuple[float, float] = (0.0, 0.95),
    rebalance: bool = True,
) -> tuple[Tensor, Tensor]:
    """(r_fg, r_bg) per image for foreground-cell fractions ``rho`` (omuda.md §4.1 step 2).

    r_bg = r / (rho*beta + 1 - rho) (written as r / (1 + rho*(beta - 1)), which is exactly r at beta = 1),
    r_fg = beta * r_bg, both clipped to ``clip``; with ``rebalance`` the unclipped one is re-solved from
    rho*r_fg + (1-rho)*r_bg = r when the other one was clipped (see the module docstring).
    """
    lo, hi = float(clip[0]), float(clip[1])
    rho = rho.double()
    denom = (1.0 + rho * (beta - 1.0)).clamp_min(1e-12)  # 0 only for rho = 1, beta = 0
    r_bg = ratio / denom
    r_fg = beta * r_bg
    r_bg_c, r_fg_c = r_bg.clamp(lo, hi), r_fg.clamp(lo, hi)
    if rebalance:
        bg_clipped, fg_clipped = r_bg_c != r_bg, r_fg_c != r_fg
        fix_fg = bg_clipped & ~fg_clipped & (rho > 0)
        r_fg_new = ((ratio - (1.0 - rho) * r_bg_c) / rho.clamp_min(1e-12)).clamp(lo, hi)
        fix_bg = fg_clipped & ~bg_clipped & (rho < 1)
        r_bg_new = ((ratio - rho * r_fg_c) / (1.0 - rho).clamp_min(1e-12)).clamp(lo, hi)
        r_fg_c = torch.where(fix_fg, r_fg_new, r_fg_c)
        r_bg_c = torch.where(fix_bg, r_bg_new, r_bg_c)
    return r_fg_c.float(), r_bg_c.float()


class ContextAwareMasker:
    """OMUDA context-aware masking (CAM), our design, reference/omuda.md §4.1.

    Same call as MIC's ``BlockMasker`` (``mask(shape, generator, device, *, pseudo_label, confidence)`` and
    ``__call__(x, generator, *, pseudo_label, confidence) -> (x * M, M)``). ``pseudo_label`` (B,H,W) or
    (B,1,H,W) long and ``confidence`` (B,H,W) p_max come from the teacher on the clean target image; without
    a pseudo-label every cell is background and the mask is MIC's (same draws).

    Defaults (omuda.md §4.1): ratio r = 0.7 and block b = 32 (MIC on DAFormer, 512 crops; 64 for HRDA's 1024
    crops), beta = 0.5 (foreground masked half as often), theta_fg = 0.1, thing classes = DAFormer's,
    granularity on with s = b // 2, clip [0, 0.95]; tau = 0.968 and rebalance = True are our choices.
    """

    def __init__(
        self,
        *,
        ratio: float = 0.7,
        block_size: int = 32,
        beta: float = 0.5,
        fg_threshold: float = 0.1,
        confidence_threshold: float | None = 0.968,
        thing_classes: Sequence[int] = THING_CLASSES,
        granularity: bool = True,
        sub_block_size: int | None = None,
        clip: Sequence[float] = (0.0, 0.95),
        rebalance: bool = True,
    ) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if not 0.0 <= fg_threshold <= 1.0:
            raise ValueError(f"fg_threshold must be in [0, 1], got {fg_threshold}")
        clip = tuple(float(c) for c in clip)
        if len(clip) != 2 or not 0.0 <= clip[0] <= clip[1] <= 1.0:
            raise ValueError(f"clip must be (lo, hi) with 0 <= lo <= hi <= 1, got {clip}")
        sub = block_size // 2 if sub_block_size is None else int(sub_block_size)
        if granularity and (sub < 1 or block_size % sub != 0):
            raise ValueError(
                f"sub_block_size must divide block_size ({block_size}) and be >= 1, got {sub}; "
                "for block_size 1 set granularity=false"
            )
        self.ratio = float(ratio)
        self.block_size = int(block_size)
        self.beta = float(beta)
        self.fg_threshold = float(fg_threshold)
        self.confidence_threshold = None if confidence_threshold is None else float(confidence_threshold)
        self.thing_classes = tuple(int(c) for c in thing_classes)
        self.granularity = bool(granularity)
        self.sub_block_size = sub
        self.clip: tuple[float, float] = (clip[0], clip[1])
        self.rebalance = bool(rebalance)
        self.last_rho: Tensor | None = None
        self.last_r_fg: Tensor | None = None
        self.last_r_bg: Tensor | None = None
        self.last_fg_cells: Tensor | None = None

    def grid(self, h: int, w: int) -> tuple[int, int]:
        """MIC's cell grid (round(H/b), round(W/b)), at least 1x1."""
        return max(1, round(h / self.block_size)), max(1, round(w / self.block_size))

    def foreground_cells(
        self, pseudo_label: Tensor, confidence: Tensor | None, grid: tuple[int, int]
    ) -> Tensor:
        """(B, gh, gw) bool: foreground fraction phi_g >= theta_fg (omuda.md §4.1 step 1).

        Pixels are assigned to cells by the same nearest upsampling that turns the cell mask into a pixel
        mask, so phi_g is the fraction over exactly the pixels the cell's mask value covers.
        """
        y = pseudo_label.squeeze(1) if pseudo_label.dim() == 4 else pseudo_label
        b, h, w = y.shape
        gh, gw = grid
        fg = torch.isin(y, torch.tensor(self.thing_classes, device=y.device, dtype=y.dtype))
        if confidence is not None and self.confidence_threshold is not None:
            c = confidence.squeeze(1) if confidence.dim() == 4 else confidence
            fg = fg & (c.to(y.device) >= self.confidence_threshold)
        ids = torch.arange(gh * gw, device=y.device, dtype=torch.float32).view(1, 1, gh, gw)
        cell_of = F.interpolate(ids, size=(h, w), mode="nearest").long().view(-1)  # (H*W,)
        count = torch.bincount(cell_of, minlength=gh * gw).float()
        fg_sum = torch.zeros(b, gh * gw, device=y.device).index_add_(1, cell_of, fg.view(b, -1).float())
        phi = fg_sum / count.clamp_min(1.0)
        return (phi >= self.fg_threshold).view(b, gh, gw) & (count > 0).view(1, gh, gw)

    def mask(
        self,
        shape: torch.Size | tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str | None = None,
        *,
        pseudo_label: Tensor | None = None,
        confidence: Tensor | None = None,
    ) -> Tensor:
        """(B,1,H,W) float keep-mask, 1 = visible, 0 = masked, for images of ``shape`` (B,C,H,W)."""
        b, _, h, w = shape
        gh, gw = self.grid(h, w)
        u = torch.rand((b, 1, gh, gw), generator=generator).to(device)  # MIC's draw, first and unchanged
        if pseudo_label is None:
            # No context: every cell is background and the ratio is r, i.e. exactly MIC's BlockMasker.
            self.last_rho = torch.zeros(b)
            self.last_r_fg = self.last_r_bg = torch.full((b,), self.ratio)
            self.last_fg_cells = torch.zeros(b, gh, gw, dtype=torch.bool)
            keep = (u > self.ratio).float()
            return F.interpolate(keep, size=(h, w), mode="nearest")

        if pseudo_label.shape[-2:] != (h, w):
            raise ValueError(f"pseudo_label size {tuple(pseudo_label.shape[-2:])} != image size {(h, w)}")
        fg_cells = self.foreground_cells(pseudo_label, confidence, (gh, gw)).to(u.device)  # (B, gh, gw)
        rho = fg_cells.flatten(1).float().mean(1)
        r_fg, r_bg = adaptive_ratios(self.ratio, rho, self.beta, clip=self.clip, rebalance=self.rebalance)
        self.last_rho, self.last_r_fg, self.last_r_bg = rho.cpu(), r_fg.cpu(), r_bg.cpu()
        self.last_fg_cells = fg_cells.cpu()
        fg = fg_cells.unsqueeze(1)  # (B,1,gh,gw)
        r_cell = torch.where(fg, r_fg.view(b, 1, 1, 1), r_bg.view(b, 1, 1, 1))
        keep = (u > r_cell).float()
        if not self.granularity:
            return F.interpolate(keep, size=(h, w), mode="nearest")

        k = self.block_size // self.sub_block_size
        u_sub = torch.rand((b, 1, gh * k, gw * k), generator=generator).to(device)
        keep_sub = (u_sub > r_fg.view(b, 1, 1, 1)).float()
        fg_up = fg.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
        keep_up = keep.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
        keep_fine = torch.where(fg_up, keep_sub, keep_up)
        return F.interpolate(keep_fine, size=(h, w), mode="nearest")

    def __call__(
        self,
        x: Tensor,
        generator: torch.Generator,
        *,
        pseudo_label: Tensor | None = None,
        confidence: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns (masked images x·M, keep-mask M (B,1,H,W))."""
        m = self.mask(x.shape, generator, x.device, pseudo_label=pseudo_label, confidence=confidence)
        m = m.to(x.dtype)
        return x * m, m

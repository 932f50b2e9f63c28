"""UDASS QuadMix for images: four-directional class pasting between the current and the previous batch.

Source: UDASS ``image_udass/seg/mmseg/models/uda/ok/dacs_gta.py`` (Phase B) and
``mmseg/models/utils/dacs_transforms_zz.py``, udass.md §1.2-§1.6; the feature-level blend follows the
intended (dead) code of the video ViT head, udass.md §2.6.4.

Memory (udass.md §1.3 step 8): after every call, in both phases, the current batch is stored detached and
cloned: source images x̃_S and labels ỹ_S, target images x̃_T, teacher pseudo-labels ŷ̃_T, the confidence map
c̃90 = 1[p_max ≥ 0.9] and the target pseudo-weights w̃_T (source pixel weights are ones and not stored).
Image i of step t is paired with image i of step t−1.

Phase switch (§1.2): ``step < quadmix_start`` → ClassMix (DACS, classes of the whole source batch, §1.6.7),
one sample with loss weight 1. ``step ≥ quadmix_start`` → QuadMix. The reference switches at iteration 6000
(ViT GTA/SYN; CNN GTA 7000, CNN SYN 6001) of a run that *resumes a MIC checkpoint* (ViT GTA at 4000, ViT SYN
at 3000, CNN at 6000) whose iteration counter continues, the MIC part having trained with ClassMix since 0;
so ``quadmix_start = 6000`` counts global steps of a run from scratch (our runs do not resume MIC and do not
reset the EMA teacher at the resume point, §1.6.4). The first QuadMix
call without a stored previous batch of the same shape (fresh run with ``quadmix_start = 0``, different
batch size) falls back to ClassMix.

QuadMix per image i (§1.4), all pastes are hard copies of whole classes (no alpha blending):

(a) C_S = ``num_source_classes`` (2) classes drawn without replacement from unique(ỹ_S[i]) (the ignore id is
    excluded unless ``include_ignore``: the reference may draw 255, §1.6.2); M_S = 1[ỹ_S[i] ∈ C_S].
(b) S→S: x_SS = M_S·x̃_S + (1−M_S)·x_S, y likewise, w_SS = 1.
(c) S→T: x_ST = M_S·x̃_S + (1−M_S)·x_T, y_ST = M_S·ỹ_S + (1−M_S)·ŷ_T, w_ST = M_S·1 + (1−M_S)·w_T.
(d) C_T = ``num_target_classes`` (2) classes of unique(ŷ̃_T[i]) not among the source classes (fewer if fewer
    remain; none → empty mask); M_T = 1[ŷ̃_T[i] ∈ C_T] · c̃90[i].
    ``disjoint="intended"`` (default): excludes the class ids C_S. ``disjoint="reference"``: the reference
    bug, excludes target classes whose id equals one of the *indices* of C_S in the sorted unique(ỹ_S[i])
    list, so the constraint is effectively random. ``target_class_pool="all"`` (reference) draws from every
    class of ŷ̃_T[i] before the c̃90 gate (a drawn class may have no confident pixel); ``"confident"`` only
    from classes with confident pixels.
(e) T→(S→S): x_TSS = M_T·x̃_T + (1−M_T)·x_SS, y from ŷ̃_T / y_SS, w_TSS = M_T·w̃_T + (1−M_T)·w_SS.
(f) T→(S→T): x_TST = M_T·x̃_T + (1−M_T)·x_ST, y from ŷ̃_T / y_ST, w_TST = M_T·w̃_T + (1−M_T)·w_ST.
(g) Rare-class pasting (:class:`RareClassPaster`) on x_TSS and on x_TST separately (different donors).
(h) Strong augmentation: one ``draw`` per call shared by both samples, per-sample factors.
(i) Two :class:`MixOutput` [TSS, TST], each with ``loss_weight = sample_weight`` (0.5). The intermediate SS
    and ST images are never trained on. Their ``mask`` is the union of pasted pixels M_S ∪ M_T ∪ rare.

Feature-level mixing (``feature_mix=True``; off by default = the released code, §1.4 [code≠claim]). Our
semantics, from the intended video ViT code (§2.6.4: "inside M_fused the S→T sample's decoder embedding
becomes 0.7·own + 0.3·S→S sample's embedding"):

- the blended sample is **TST** (the compound built on the S→T mix, target background); its partner is
  **TSS** (index 0 of the returned list). TSS itself is trained on its own, un-blended embedding;
- the region is where both compound images show the same pasted content, M_S ∪ M_T, minus the pixels where
  either sample received a rare-class donor (donors differ between the two samples in the image branch; in
  the video code they were identical and M_lt was part of the region);
- emb_TST ← α·emb_TST + (1−α)·emb_TSS inside the region (nearest-resized to the embedding size), α = 0.7,
  unchanged outside; the blend is a plain differentiable op: L_TST back-propagates into both forward passes
  (``feature_mix_detach=True`` stops the gradient into the TSS embedding).

The memory is an ``extra_state`` of this module (not a registered buffer: DDP would broadcast buffers from
rank 0 and every rank must keep its own batch), so it travels in ``state_dict`` / Lightning checkpoints.
Lightning writes rank 0's ``state_dict`` only; for an exact multi-GPU resume, call :meth:`gather_extra_state`
from ``LightningModule.on_save_checkpoint`` on every rank: the checkpoint then holds every rank's memory and
:meth:`set_extra_state` picks its own rank's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.uda.augment import StrongAugment
from src.uda.mixing.classmix import ClassMix, MixOutput
from src.uda.mixing.rare_class_paste import RareClassPaster
from src.utils.phases import as_step

MEMORY_KEYS = ("x_s", "y_s", "x_t", "y_t", "c90", "w_t")
DISJOINT_MODES = ("intended", "reference")
TARGET_POOLS = ("all", "confident")
REGION_MODES = ("nearest", "area")


@dataclass
class FeaturePartner:
    """Blend instruction for one :class:`MixOutput` (QuadMix feature mixing, udass.md §2.6.4 intent).

    The caller computes the decoder embeddings of all samples of the call, then replaces this sample's
    embedding by ``feature_mix(emb_self, emb[index], region, alpha, mode=mode, detach_b=detach)`` before the
    classifier.
    """

    index: int  # position, in the list returned by the same call, of the sample blended in (emb_b)
    region: Tensor  # (B,1,H,W) float {0,1} at image resolution
    alpha: float = 0.7
    mode: str = "nearest"
    detach: bool = False


def resize_region(region: Tensor, size: Sequence[int], mode: str = "nearest") -> Tensor:
    """(B,1,H,W) or (B,H,W) {0,1} mask -> (B,1,h,w) float: nearest (PyTorch floor index) or area fraction."""
    if mode not in REGION_MODES:
        raise ValueError(f"mode must be one of {REGION_MODES}, got {mode!r}")
    r = region.unsqueeze(1) if region.dim() == 3 else region
    r = r.float()
    size = (int(size[0]), int(size[1]))
    if tuple(r.shape[-2:]) == size:
        return r
    if mode == "nearest":
        return F.interpolate(r, size=size, mode="nearest")
    return F.adaptive_avg_pool2d(r, size)


def feature_mix(
    emb_a: Tensor,
    emb_b: Tensor,
    region: Tensor,
    alpha: float = 0.7,
    *,
    mode: str = "nearest",
    detach_b: bool = False,
) -> Tensor:
    """Blend decoder embeddings: ``alpha·emb_a + (1−alpha)·emb_b`` inside ``region``, ``emb_a`` outside.

    emb_a, emb_b: (B,C,h,w); region: (B,1,H,W) or (B,H,W) at any resolution, resized to (h, w) with
    :func:`resize_region` (``area``: fractional r gives ``emb_a + r·(1−alpha)·(emb_b − emb_a)``). Gradients
    flow into both embeddings unless ``detach_b``.
    """
    if emb_a.shape != emb_b.shape:
        raise ValueError(f"embeddings differ in shape: {tuple(emb_a.shape)} vs {tuple(emb_b.shape)}")
    if detach_b:
        emb_b = emb_b.detach()
    r = resize_region(region, emb_a.shape[-2:], mode).to(device=emb_a.device, dtype=emb_a.dtype)
    if mode == "nearest":
        return torch.where(r.bool(), alpha * emb_a + (1.0 - alpha) * emb_b, emb_a)
    wb = r * (1.0 - alpha)
    return (1.0 - wb) * emb_a + wb * emb_b


def _squeeze(y: Tensor) -> Tensor:
    return y.squeeze(1) if y.dim() == 4 else y


class QuadMix(nn.Module):
    """UDASS QuadMix (udass.md §1.4) with a one-step memory, ClassMix before ``quadmix_start``.

    Keyword args (defaults = the reference image configs, udass.md §1.5):
        quadmix_start: first global step of QuadMix (6000, see the module docstring).
        num_source_classes / num_target_classes: classes pasted from the previous source / target (2 / 2).
        confidence_threshold: c90 gate of the target paste (0.9, separate from the 0.968 weight threshold).
        disjoint: ``"intended"`` (target ids ∉ source ids) or ``"reference"`` (the id-vs-index bug, §1.6.2).
        include_ignore: allow the ignore id as a source class (reference quirk §1.6.2; default False).
        target_class_pool: ``"all"`` (reference) or ``"confident"`` target classes to draw from.
        sample_weight: loss weight of each of the two compound samples (0.5).
        augment: strong augmentation of the final samples (default: DACS ``StrongAugment()``).
        classmix: mixer before ``quadmix_start`` (default: ``ClassMix(class_choice="batch")`` with
            ``augment``).
        rare_paster: rare-class paster applied to both samples (None = off).
        feature_mix / feature_mix_alpha / feature_mix_mode / feature_mix_detach: decoder-embedding blend of
            the TST sample with the TSS sample (off / 0.7 / nearest / False).
        ignore_index: 255.
    """

    def __init__(
        self,
        *,
        quadmix_start: int = 6000,
        num_source_classes: int = 2,
        num_target_classes: int = 2,
        confidence_threshold: float = 0.9,
        disjoint: str = "intended",
        include_ignore: bool = False,
        target_class_pool: str = "all",
        sample_weight: float = 0.5,
        augment: StrongAugment | None = None,
        classmix: ClassMix | None = None,
        rare_paster: RareClassPaster | None = None,
        feature_mix: bool = False,
        feature_mix_alpha: float = 0.7,
        feature_mix_mode: str = "nearest",
        feature_mix_detach: bool = False,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if disjoint not in DISJOINT_MODES:
            raise ValueError(f"disjoint must be one of {DISJOINT_MODES}, got {disjoint!r}")
        if target_class_pool not in TARGET_POOLS:
            raise ValueError(f"target_class_pool must be one of {TARGET_POOLS}, got {target_class_pool!r}")
        if feature_mix_mode not in REGION_MODES:
            raise ValueError(f"feature_mix_mode must be one of {REGION_MODES}, got {feature_mix_mode!r}")
        if num_source_classes < 0 or num_target_classes < 0:
            raise ValueError("num_source_classes / num_target_classes must be >= 0")
        if not 0.0 <= feature_mix_alpha <= 1.0:
            raise ValueError(f"feature_mix_alpha must be in [0, 1], got {feature_mix_alpha}")
        self.quadmix_start = as_step(quadmix_start, "quadmix_start")
        self.num_source_classes = int(num_source_classes)
        self.num_target_classes = int(num_target_classes)
        self.confidence_threshold = float(confidence_threshold)
        self.disjoint = disjoint
        self.include_ignore = bool(include_ignore)
        self.target_class_pool = target_class_pool
        self.sample_weight = float(sample_weight)
        self.augment = augment if augment is not None else StrongAugment()
        if classmix is None:
            classmix = ClassMix(class_choice="batch", augment=self.augment)
        self.classmix = classmix
        self.rare_paster = rare_paster
        self.feature_mix = bool(feature_mix)
        self.feature_mix_alpha = float(feature_mix_alpha)
        self.feature_mix_mode = feature_mix_mode
        self.feature_mix_detach = bool(feature_mix_detach)
        self.ignore_index = int(ignore_index)
        self._memory: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ memory / checkpoint state
    @property
    def memory(self) -> dict[str, Tensor]:
        """The stored previous batch (empty before the first call)."""
        return self._memory

    def memory_state(self) -> dict[str, Tensor]:
        """CPU clones of the memory (empty dict when none)."""
        return {k: v.detach().cpu().clone() for k, v in self._memory.items()}

    def load_memory_state(self, state: dict[str, Tensor] | None) -> None:
        """Restore the memory from :meth:`memory_state` (empty / None = no memory)."""
        state = dict(state or {})
        if state and set(state) != set(MEMORY_KEYS):
            raise ValueError(f"QuadMix memory needs keys {MEMORY_KEYS}, got {sorted(state)}")
        self._memory = {k: v.detach().clone() for k, v in state.items()}

    def get_extra_state(self) -> dict[str, Any]:
        return {"version": 1, "memory": self.memory_state()}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"QuadMix extra state must be a dict, got {type(state).__name__}")
        per_rank = state.get("per_rank")
        if per_rank:
            rank = _rank()
            self.load_memory_state(per_rank[rank] if rank < len(per_rank) else {})
        else:
            self.load_memory_state(state.get("memory"))

    def gather_extra_state(self, extra_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Extra state holding every DDP rank's memory under ``per_rank`` (a collective: call on all ranks).

        Use in ``LightningModule.on_save_checkpoint`` (``key = "mix._extra_state"``):
        ``ckpt["state_dict"][key] = self.mix.gather_extra_state(ckpt["state_dict"][key])``.
        Single process: ``per_rank`` = [own memory].
        """
        state = dict(extra_state) if extra_state is not None else self.get_extra_state()
        own = self.memory_state()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, own)
            state["per_rank"] = gathered
        else:
            state["per_rank"] = [own]
        return state

    def _remember(
        self, x_s: Tensor, y_s: Tensor, x_t: Tensor, y_t: Tensor, p_max: Tensor, w_t: Tensor
    ) -> None:
        self._memory = {
            "x_s": x_s.detach().clone(),
            "y_s": y_s.detach().long().clone(),
            "x_t": x_t.detach().clone(),
            "y_t": y_t.detach().long().clone(),
            "c90": (p_max.detach() >= self.confidence_threshold).clone(),
            "w_t": w_t.detach().float().clone(),
        }

    def _memory_fits(self, x_s: Tensor, x_t: Tensor) -> bool:
        m = self._memory
        return bool(m) and m["x_s"].shape == x_s.shape and m["x_t"].shape == x_t.shape

    # ------------------------------------------------------------------ class choices
    def choose_source_classes(self, label: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(ids, indices in the sorted unique list) of ``num_source_classes`` classes of ``label``."""
        classes = torch.unique(label)
        if not self.include_ignore:
            classes = classes[classes != self.ignore_index]
        n = int(classes.numel())
        idx = torch.randperm(n, generator=generator)[: min(self.num_source_classes, n)].to(classes.device)
        return classes[idx], idx

    def choose_target_classes(
        self,
        label: Tensor,
        confident: Tensor,
        source_ids: Tensor,
        source_idx: Tensor,
        generator: torch.Generator,
    ) -> Tensor:
        """Up to ``num_target_classes`` pseudo-label classes of ``label``, disjoint from the source ones."""
        classes = torch.unique(label[confident] if self.target_class_pool == "confident" else label)
        classes = classes[classes != self.ignore_index]
        exclude = source_ids if self.disjoint == "intended" else source_idx  # reference: id vs index bug
        classes = classes[~torch.isin(classes, exclude.to(classes.device))]
        n = int(classes.numel())
        idx = torch.randperm(n, generator=generator)[: min(self.num_target_classes, n)].to(classes.device)
        return classes[idx]

    def masks(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(M_S, M_T) bool (B,H,W) from the memory: source classes of ỹ_S, confident target classes of ŷ̃_T."""
        y_s, y_t, c90 = self._memory["y_s"], self._memory["y_t"], self._memory["c90"]
        m_s, m_t = [], []
        for i in range(y_s.shape[0]):
            ids, idx = self.choose_source_classes(y_s[i], generator)
            m_s.append(torch.isin(y_s[i], ids))
            ct = self.choose_target_classes(y_t[i], c90[i], ids, idx, generator)
            m_t.append(torch.isin(y_t[i], ct) & c90[i])
        return torch.stack(m_s), torch.stack(m_t)

    # ------------------------------------------------------------------ mixing
    def forward(
        self,
        x_s: Tensor,
        y_s: Tensor,
        x_t: Tensor,
        y_t_hat: Tensor,
        w_t: Tensor,
        generator: torch.Generator,
        *,
        step: int,
        p_max: Tensor,
    ) -> list[MixOutput]:
        """ClassMix ([one sample], weight 1) before ``quadmix_start`` or without memory, else [TSS, TST].

        Called as ``quadmix(x_s, y_s, x_t, y_t_hat, w_t, generator, step=t, p_max=p_max)``: images (B,3,H,W),
        labels / pseudo-labels (B,H,W), pseudo-weights and teacher max-probabilities (B,H,W). The memory is
        updated with this batch afterwards, in both phases.
        """
        y_s, y_t_hat, p_max = _squeeze(y_s), _squeeze(y_t_hat), _squeeze(p_max)
        w_t = _squeeze(w_t).float()
        with torch.no_grad():
            if int(step) < self.quadmix_start or not self._memory_fits(x_s, x_t):
                outs = [self.classmix(x_s, y_s, x_t, y_t_hat, w_t, generator)]
            else:
                outs = self._quadmix(x_s, y_s, x_t, y_t_hat, w_t, generator)
            self._remember(x_s, y_s, x_t, y_t_hat, p_max, w_t)
        return outs

    def _quadmix(
        self, x_s: Tensor, y_s: Tensor, x_t: Tensor, y_t: Tensor, w_t: Tensor, generator: torch.Generator
    ) -> list[MixOutput]:
        dev = x_s.device
        mem = {k: v.to(dev) for k, v in self._memory.items()}
        self._memory = mem
        m_s, m_t = self.masks(generator)
        ms, mt = m_s.unsqueeze(1), m_t.unsqueeze(1)  # (B,1,H,W) for images
        y_s, y_t = y_s.long(), y_t.long()
        ones = torch.ones_like(w_t)
        # (b) S->S and (c) S->T: previous source classes onto the current source / target.
        x_ss = torch.where(ms, mem["x_s"], x_s)
        y_ss = torch.where(m_s, mem["y_s"], y_s)
        w_ss = ones
        x_st = torch.where(ms, mem["x_s"], x_t)
        y_st = torch.where(m_s, mem["y_s"], y_t)
        w_st = torch.where(m_s, ones, w_t)
        # (e) T->(S->S) and (f) T->(S->T): previous confident target classes onto both.
        x_tss = torch.where(mt, mem["x_t"], x_ss)
        y_tss = torch.where(m_t, mem["y_t"], y_ss)
        w_tss = torch.where(m_t, mem["w_t"], w_ss)
        x_tst = torch.where(mt, mem["x_t"], x_st)
        y_tst = torch.where(m_t, mem["y_t"], y_st)
        w_tst = torch.where(m_t, mem["w_t"], w_st)
        # (g) rare-class pasting, separately for each compound sample.
        lt_tss = lt_tst = torch.zeros_like(m_s)
        if self.rare_paster is not None:
            x_tss, y_tss, lt_tss = self.rare_paster.paste(x_tss, y_tss, generator)
            x_tst, y_tst, lt_tst = self.rare_paster.paste(x_tst, y_tst, generator)
        # (h) strong augmentation, one draw for the step, per-sample factors.
        params = self.augment.draw(generator)
        b = x_s.shape[0]
        x_aug = self.augment(torch.cat([x_tss, x_tst]), params, generator)
        x_tss, x_tst = x_aug[:b], x_aug[b:]
        partner = None
        if self.feature_mix:
            region = (m_s | m_t) & ~lt_tss & ~lt_tst
            partner = FeaturePartner(
                index=0,
                region=region.unsqueeze(1).float(),
                alpha=self.feature_mix_alpha,
                mode=self.feature_mix_mode,
                detach=self.feature_mix_detach,
            )
        pasted = m_s | m_t
        return [
            MixOutput(
                x_mix=x_tss,
                y_mix=y_tss,
                w_mix=w_tss,
                mask=(pasted | lt_tss).unsqueeze(1).float(),
                loss_weight=self.sample_weight,
            ),
            MixOutput(
                x_mix=x_tst,
                y_mix=y_tst,
                w_mix=w_tst,
                mask=(pasted | lt_tst).unsqueeze(1).float(),
                loss_weight=self.sample_weight,
                feature_partner=partner,
            ),
        ]


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return 0

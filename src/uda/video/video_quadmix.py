"""Video QuadMix: QuadMix on two-frame clips — frames, labels and flows mixed together with the same masks.

Source: udass.md §2.6.4 (``train_video_DAVSS_DSF_cd_ablation_{24,31}.py`` and
``dsp/transformmasks_dsp_cd_xiuzheng.py``), §2.6.7 (memory), video_uda.md §3.4. The image building blocks
are reused: class choices and the checkpointed one-step memory of :class:`src.uda.mixing.quadmix.QuadMix`
(§1.4a/d), donors of :class:`src.uda.mixing.rare_class_paste.RareClassPaster` (§1.4g).

Notation: a clip is (frame t, frame t−1, flow t→t−1, labels of both frames). The current source clip is
(S^cf, S^kf, F^S, Y^cf, Y^kf); the current target clip is the TPS strong view (d̃, c̃, flow d→c) with the
cross-frame pseudo-labels ŷ_d, ŷ_c (src/uda/video/tps.py). The memory of the previous step holds the
source clip S̃^cf, S̃^kf, Ỹ^cf, Ỹ^kf, F̃^S, the un-augmented target frames T̃^d, T̃^c, their pseudo-labels
P̃^d, P̃^c, the confident target masks M̃_T^d, M̃_T^c and the target flow F̃^T = flow d→b.
Per clip i of the batch (paired with clip i of the previous step), all pastes are hard copies (λ = 1):

1. Source mask: C_S = {``num_source_classes`` (2) random classes of Ỹ^cf} ∪ ``source_rare_classes`` (VIPER
   {fence, light, sign, terrain, motorcycle, bicycle}, SYNTHIA-Seq {fence, pole, light, sign, rider});
   M_S^cf = 1[Ỹ^cf ∈ C_S], M_S^kf = 1[Ỹ^kf ∈ C_S]. A previous frame without labels (all ignore, a dataset
   without t−1 labels) uses M_S^cf for both frames (``prev_label_fallback``; ours).
2. S→T: X_ST^d = M_S^cf·S̃^cf + (1−M_S^cf)·d̃, Y_ST^d likewise from Ỹ^cf / ŷ_d; X_ST^c from S̃^kf / c̃ with
   M_S^kf. S→S: X_SS^cf = M_S^cf·S̃^cf + (1−M_S^cf)·S^cf, X_SS^kf from S̃^kf / S^kf with M_S^kf.
3. Long-tail paste (``rare_paster``, optional): ``rare_paster.num_classes`` (2 SYN / 3 VIPER) classes of
   ``rare_paster.classes``; for each, one donor crop (a source frame holding the class) pasted identically
   into all four frames (X_SS^cf, X_SS^kf, X_ST^d, X_ST^c) and their labels. M_lt = union of pasted masks.
4. Flow mix: F_ST = M·F̃^S + (1−M)·flow_{d→c}, F_SS = M·F̃^S + (1−M)·F^S with M = M_S^kf
   (``flow_mask="kf"``, the reference; ``"cf"`` uses M_S^cf, the mask on the flow's own grid, frame t).
5. Target paste (T→S and T→T): X^d/cf ← M̃_T^d·T̃^d + (1−M̃_T^d)·X (labels P̃^d), X^c/kf ← M̃_T^c·T̃^c + ...
   (labels P̃^c), into both the ST and the SS clip; flows F ← M̃·F̃^T + (1−M̃)·F with M̃ = M̃_T^c (``kf``)
   or M̃_T^d (``cf``).
6. Outputs: the two mixed clips ``ss`` and ``st`` with their fusio mask (udass.md §2.5a: inside it the
   two-frame model replaces the warped key-frame logits by the current ones): M_lt (``fusio_region=
   "long_tail"``, the reference) or every pasted pixel M_S^cf ∪ M_lt ∪ M̃_T^d (``"pasted"``).
   The training step computes L_SS = CE(f(SS), Y_SS^cf) and L_ST = CE(f(ST), Y_ST^d), unweighted (no
   confidence weighting in video, §2.6.4 step 7).
7. Memory for the next step (§2.6.7, also on steps without mixing): the current source clip, the
   un-augmented target frames d, c, ŷ_d, ŷ_c, flow d→b, and the new confident target masks:
   C_T = ``num_target_classes`` (2) classes of ŷ_d not among this step's 2 random source classes (fewer if
   fewer remain), M_T^d = 1[conf_d > 0.9]·1[ŷ_d ∈ C_T], M_T^c = 1[conf_c > 0.9]·1[ŷ_c ∈ C_T].

No post-mix augmentation (the target frames are already the strong view) and no ClassMix phase: before
``quadmix_start`` or without a stored clip of the same shape (the first step) the call returns no sample
and only fills the memory (the reference skips its whole first iteration; we still train the source and
TPS terms there). Feature-level mixing is dead code in the reference video branch (§2.6.4 [code≠claim]) and
not implemented. Both mixed clips are built from the same crop size as the target (our data pipeline
crops source and target to ``data.crop_size``), so the reference's source window crop (§2.6.4) is not
needed.

The memory is the QuadMix ``extra_state`` (saved in checkpoints; every DDP rank's via
``gather_extra_state``, which ``UDAModule.on_save_checkpoint`` calls for ``self.mix``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from src.uda.mixing.quadmix import QuadMix
from src.uda.mixing.rare_class_paste import DatasetLoader, RareClassPaster

VIDEO_MEMORY_KEYS = (
    "s_x", "s_x_prev", "s_y", "s_y_prev", "s_flow",
    "t_x", "t_x_prev", "t_y", "t_y_prev", "t_flow", "m_t", "m_t_prev",
)  # fmt: skip
FLOW_MASKS = ("kf", "cf")
FUSIO_REGIONS = ("long_tail", "pasted")


@dataclass
class Clip:
    """A batch of two-frame clips: frames (B,3,H,W), backward flow t→t−1 (B,2,H,W), labels (B,H,W)."""

    x: Tensor
    x_prev: Tensor
    flow: Tensor
    y: Tensor
    y_prev: Tensor


@dataclass
class VideoMixOutput(Clip):
    """A mixed clip (``name`` "ss" or "st"), its fusio mask and its pasted pixels, (B,1,H,W) float {0,1}."""

    name: str = ""
    fusio_mask: Tensor | None = None
    pasted: Tensor | None = None


class ClipDonorLoader(DatasetLoader):
    """Long-tail donors read through the source *clip* dataset: the current frame of a clip and its label.

    ``dataset``: a clip dataset (src/data/datasets/clip_folder.py) or its factory (``${data.source}``),
    built on first use. The donor path is ``rare_paster.root / <file of samples_with_class.json>`` with
    ``root`` = the dataset's ``stats_root`` (where ``scripts/prepare_data.py`` writes the statistics of the
    clips' current frames).
    """

    def __call__(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        ds = self.dataset
        root = Path(getattr(ds, "stats_root", ds.root))
        try:
            key = Path(path).relative_to(root).as_posix()
        except ValueError:
            raise ValueError(
                f"long-tail donor {path} is not under the source clips' statistics folder {root}: set "
                f"uda.mix.rare_paster.root to it"
            ) from None
        clip = ds.load_clip(ds.index_of(key), (0,), (0,))
        if 0 not in clip.labels:
            raise ValueError(f"long-tail donor {path}: clip {clip.name} has no label of its current frame")
        return clip.frames[0], clip.labels[0]


def _squeeze(y: Tensor) -> Tensor:
    return y.squeeze(1) if y.dim() == 4 else y


class VideoQuadMix(QuadMix):
    """Video QuadMix (udass.md §2.6.4) with the one-step memory of :class:`QuadMix`.

    Keyword args (defaults = the reference video scripts, udass.md §2.6.4 / §2.7):
        quadmix_start: first step that mixes (0: from the first step with a memory, as the reference).
        num_source_classes / num_target_classes: random classes of Ỹ^cf / ŷ_d (2 / 2).
        source_rare_classes: classes always added to C_S (the dataset's rare set; empty = none).
        confidence_threshold: gate of the confident target masks (0.9, strict ``>``).
        include_ignore, target_class_pool: the class-choice options of :class:`QuadMix` (the target classes
            always exclude the source class ids: the video reference has no id-vs-index bug).
        rare_paster: long-tail donors (None = no long-tail paste).
        flow_mask: ``"kf"`` (reference) or ``"cf"``, the mask the flows are mixed with.
        fusio_region: ``"long_tail"`` (reference) or ``"pasted"``, where the key-frame logits are replaced.
        prev_label_fallback: use frame t's source mask for frame t−1 when t−1 has no labels.
        ignore_index: 255.
    """

    def __init__(
        self,
        *,
        quadmix_start: int = 0,
        num_source_classes: int = 2,
        num_target_classes: int = 2,
        source_rare_classes: Sequence[int] = (),
        confidence_threshold: float = 0.9,
        include_ignore: bool = False,
        target_class_pool: str = "all",
        rare_paster: RareClassPaster | None = None,
        flow_mask: str = "kf",
        fusio_region: str = "long_tail",
        prev_label_fallback: bool = True,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(
            quadmix_start=quadmix_start,
            num_source_classes=num_source_classes,
            num_target_classes=num_target_classes,
            confidence_threshold=confidence_threshold,
            disjoint="intended",
            include_ignore=include_ignore,
            target_class_pool=target_class_pool,
            sample_weight=1.0,
            rare_paster=rare_paster,
            ignore_index=ignore_index,
        )
        if flow_mask not in FLOW_MASKS:
            raise ValueError(f"flow_mask must be one of {FLOW_MASKS}, got {flow_mask!r}")
        if fusio_region not in FUSIO_REGIONS:
            raise ValueError(f"fusio_region must be one of {FUSIO_REGIONS}, got {fusio_region!r}")
        # The video branch has no post-mix augmentation and no ClassMix phase (see the module docstring).
        self.augment = None
        self.classmix = None
        self.source_rare_classes = torch.tensor(
            sorted({int(c) for c in source_rare_classes}), dtype=torch.long
        )
        self.flow_mask = flow_mask
        self.fusio_region = fusio_region
        self.prev_label_fallback = bool(prev_label_fallback)

    # ------------------------------------------------------------------ memory
    def load_memory_state(self, state: dict[str, Tensor] | None) -> None:
        state = dict(state or {})
        if state and set(state) != set(VIDEO_MEMORY_KEYS):
            raise ValueError(f"video QuadMix memory needs keys {VIDEO_MEMORY_KEYS}, got {sorted(state)}")
        self._memory = {k: v.detach().clone() for k, v in state.items()}

    def _fits(self, source: Clip, target: Clip) -> bool:
        m = self._memory
        return bool(m) and m["s_x"].shape == source.x.shape and m["t_x"].shape == target.x.shape

    def _remember_clips(
        self,
        source: Clip,
        target_raw: tuple[Tensor, Tensor],
        target: Clip,
        confidence: tuple[Tensor, Tensor],
        target_flow_key: Tensor,
        source_ids: list[Tensor] | None,
        generator: torch.Generator,
    ) -> None:
        """Store this step's clips and draw the confident target masks for the next step (§2.6.4 step 8)."""
        y_t, y_tp = _squeeze(target.y).long(), _squeeze(target.y_prev).long()
        conf_t = _squeeze(confidence[0]).float() > self.confidence_threshold
        conf_tp = _squeeze(confidence[1]).float() > self.confidence_threshold
        m_t, m_tp = [], []
        empty = torch.empty(0, dtype=torch.long, device=y_t.device)
        for i in range(y_t.shape[0]):
            ids = source_ids[i] if source_ids is not None else empty
            classes = self.choose_target_classes(y_t[i], conf_t[i], ids, ids, generator)
            m_t.append(torch.isin(y_t[i], classes) & conf_t[i])
            m_tp.append(torch.isin(y_tp[i], classes) & conf_tp[i])
        self._memory = {
            "s_x": source.x.detach().clone(),
            "s_x_prev": source.x_prev.detach().clone(),
            "s_y": _squeeze(source.y).detach().long().clone(),
            "s_y_prev": _squeeze(source.y_prev).detach().long().clone(),
            "s_flow": source.flow.detach().float().clone(),
            "t_x": target_raw[0].detach().clone(),
            "t_x_prev": target_raw[1].detach().clone(),
            "t_y": y_t.detach().clone(),
            "t_y_prev": y_tp.detach().clone(),
            "t_flow": target_flow_key.detach().float().clone(),
            "m_t": torch.stack(m_t),
            "m_t_prev": torch.stack(m_tp),
        }

    # ------------------------------------------------------------------ masks
    def source_masks(self, generator: torch.Generator) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(M_S^cf, M_S^kf) bool (B,H,W) from the memory's source labels + the random class ids per clip."""
        y, y_prev = self._memory["s_y"], self._memory["s_y_prev"]
        rare = self.source_rare_classes.to(y.device)
        m_cf, m_kf, chosen = [], [], []
        for i in range(y.shape[0]):
            ids, _ = self.choose_source_classes(y[i], generator)
            classes = torch.unique(torch.cat([ids, rare]))
            m = torch.isin(y[i], classes)
            no_prev_labels = bool((y_prev[i] == self.ignore_index).all())
            mp = m if (self.prev_label_fallback and no_prev_labels) else torch.isin(y_prev[i], classes)
            m_cf.append(m)
            m_kf.append(mp)
            chosen.append(ids)
        return torch.stack(m_cf), torch.stack(m_kf), chosen

    # ------------------------------------------------------------------ mixing
    def forward(  # type: ignore[override]
        self,
        source: Clip,
        target: Clip,
        *,
        target_raw: tuple[Tensor, Tensor],
        confidence: tuple[Tensor, Tensor],
        target_flow_key: Tensor,
        generator: torch.Generator,
        step: int,
    ) -> list[VideoMixOutput]:
        """[SS, ST] mixed clips (or [] before ``quadmix_start`` / without memory); the memory is updated.

        Args:
            source: current source clip (un-augmented).
            target: current target clip: the strong view (d̃, c̃, flow d→c) and pseudo-labels (ŷ_d, ŷ_c).
            target_raw: the un-augmented target frames (d, c), stored for the next step's target paste.
            confidence: (conf_d, conf_c) (B,H,W) of the pseudo-labels.
            target_flow_key: flow d→b (t→t−Δ) (B,2,H,W), stored with the target frames.
            generator: the step's CPU generator; step: the global step.
        """
        for name, clip in (("source", source), ("target", target)):
            if clip.x.shape != clip.x_prev.shape or clip.flow.shape[-2:] != clip.x.shape[-2:]:
                raise ValueError(
                    f"video QuadMix: the {name} clip's frames {tuple(clip.x.shape)} / "
                    f"{tuple(clip.x_prev.shape)} and flow {tuple(clip.flow.shape)} must share one size"
                )
        if source.x.shape != target.x.shape:
            raise ValueError(
                f"video QuadMix mixes source and target crops of one size: source {tuple(source.x.shape)}, "
                f"target {tuple(target.x.shape)} (data.crop_size)"
            )
        with torch.no_grad():
            outs: list[VideoMixOutput] = []
            chosen = None
            if int(step) >= self.quadmix_start and self._fits(source, target):
                outs, chosen = self._mix(source, target, generator)
            self._remember_clips(source, target_raw, target, confidence, target_flow_key, chosen, generator)
        return outs

    def _paste_long_tail(
        self, xs: list[Tensor], ys: list[Tensor], generator: torch.Generator
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Step 3: the same donor pixels and labels into every frame of ``xs`` / ``ys``; returns M_lt."""
        if self.rare_paster is None:
            b, _, h, w = xs[0].shape
            return xs, ys, torch.zeros((b, h, w), dtype=torch.bool, device=xs[0].device)
        return self.rare_paster.paste_frames(xs, ys, generator)

    def _mix(
        self, source: Clip, target: Clip, generator: torch.Generator
    ) -> tuple[list[VideoMixOutput], list[Tensor]]:
        dev = source.x.device
        mem = {k: v.to(dev) for k, v in self._memory.items()}
        self._memory = mem
        m_cf, m_kf, chosen = self.source_masks(generator)
        cf, kf = m_cf.unsqueeze(1), m_kf.unsqueeze(1)
        y_s, y_sp = _squeeze(source.y).long(), _squeeze(source.y_prev).long()
        y_t, y_tp = _squeeze(target.y).long(), _squeeze(target.y_prev).long()
        # 2. S->T and S->S: previous source classes onto the current target / source clip, frame by frame.
        x_st, xp_st = torch.where(cf, mem["s_x"], target.x), torch.where(kf, mem["s_x_prev"], target.x_prev)
        y_st, yp_st = torch.where(m_cf, mem["s_y"], y_t), torch.where(m_kf, mem["s_y_prev"], y_tp)
        x_ss, xp_ss = torch.where(cf, mem["s_x"], source.x), torch.where(kf, mem["s_x_prev"], source.x_prev)
        y_ss, yp_ss = torch.where(m_cf, mem["s_y"], y_s), torch.where(m_kf, mem["s_y_prev"], y_sp)
        # 3. long-tail paste: identical donor patches in all four frames.
        (x_ss, xp_ss, x_st, xp_st), (y_ss, yp_ss, y_st, yp_st), m_lt = self._paste_long_tail(
            [x_ss, xp_ss, x_st, xp_st], [y_ss, yp_ss, y_st, yp_st], generator
        )
        # 4. flows mixed with the source mask.
        fm = (kf if self.flow_mask == "kf" else cf).to(dev)
        f_st = torch.where(fm, mem["s_flow"], target.flow.float())
        f_ss = torch.where(fm, mem["s_flow"], source.flow.float())
        # 5. previous confident target classes onto both clips (frames, labels, flows).
        mt, mtp = mem["m_t"], mem["m_t_prev"]
        mt4, mtp4 = mt.unsqueeze(1), mtp.unsqueeze(1)
        x_st, xp_st = torch.where(mt4, mem["t_x"], x_st), torch.where(mtp4, mem["t_x_prev"], xp_st)
        y_st, yp_st = torch.where(mt, mem["t_y"], y_st), torch.where(mtp, mem["t_y_prev"], yp_st)
        x_ss, xp_ss = torch.where(mt4, mem["t_x"], x_ss), torch.where(mtp4, mem["t_x_prev"], xp_ss)
        y_ss, yp_ss = torch.where(mt, mem["t_y"], y_ss), torch.where(mtp, mem["t_y_prev"], yp_ss)
        tf = mtp4 if self.flow_mask == "kf" else mt4
        f_st, f_ss = torch.where(tf, mem["t_flow"], f_st), torch.where(tf, mem["t_flow"], f_ss)
        # 6. outputs with their fusio masks.
        pasted = (m_cf | m_lt | mt).unsqueeze(1).float()
        fusio = m_lt.unsqueeze(1).float() if self.fusio_region == "long_tail" else pasted
        outs = [
            VideoMixOutput(x=x_ss, x_prev=xp_ss, flow=f_ss, y=y_ss, y_prev=yp_ss, name="ss", fusio_mask=fusio,
                           pasted=pasted),
            VideoMixOutput(x=x_st, x_prev=xp_st, flow=f_st, y=y_st, y_prev=yp_st, name="st", fusio_mask=fusio,
                           pasted=pasted),
        ]  # fmt: skip
        return outs, chosen

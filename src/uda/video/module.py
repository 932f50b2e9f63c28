"""The video UDA LightningModule: two-frame student, TPS, video QuadMix and the prototype MMD.

Source: udass.md §2.6 (the UDASS video training iteration) and §2.6.6 (total loss), video_uda.md §3.3-§3.4.
A subclass of :class:`src.uda.module.UDAModule`: optimisation (AdamW groups + the fusion group, poly
warm-up), ``backward_term`` (``train.backward``), non-finite checks, per-step generators, stage timers,
logging and checkpointing (QuadMix memory included) are the image module's; this class replaces the
training and validation steps. One training step, in the order of the paper::

    teacher.update(student, t)                                  EMA (default) or the reference's switch
    S      = match_histograms(S, d)      (option)               TPS source preprocessing         §2.6.1
    L_src  = CE(f(S^cf, S^kf, F^S), Y^cf) + 0.1·CE(aux)         fused two-frame source loss      §2.6.2
    ŷ      = warp(T(b, a, flow b→a), flow d→b)                  TPS cross-frame pseudo-labels    §2.6.3
    L_TPS  = CE(f(d̃, c̃, flow d→c), ŷ) + 0.1·CE(aux, ŷ_aux)      strong view of the current pair
    L_MMD  = MMD(protos(f(S)), ½ protos(f(d̃,c̃)) + ½ protos(f(d, a, flow d→a)))                §2.6.5
    SS, ST = video QuadMix(current clips, memory)                                                §2.6.4
    L_SS   = CE(f_fusio(SS), Y_SS),  L_ST = CE(f_fusio(ST), Y_ST)
    L      = λ_T·(L_TPS + L_ST) + L_SS + L_src + 0.01·L_MMD                                      §2.6.6
    one optimizer step, then the lr schedule step.

The image strategies compose with it through config (ours; no reference runs them on clips):
``uda/fd=imnet`` adds DAFormer's ImageNet feature distance on the current source frame's features
(daformer_mic.md §1.6) to L_src, and ``uda/mask=mic`` (or ``cam``) adds MIC's masked consistency
(daformer_mic.md §2): both current target frames through MIC's own strong augmentation and the *same*
block mask, the two-frame student trained on the TPS labels ŷ with weight ``uda.mask.weight``, from
``uda.tps_start`` on like L_TPS.

The 0.1·aux terms (``uda.aux_weight``) exist when the model has the CNN student's auxiliary classifier
(``model.aux_head=true``, accel_deeplabv2_r101; udass.md §2.5a); ŷ_aux is the TPS label of the teacher's
fused auxiliary output. ``uda.source_histogram_match`` matches the source frames' histograms to the
current target frame (TPS, udass.md §2.6.1; off by default).

λ_T = ``uda.lambda_t`` (1.0 SYNTHIA-Seq, 0.2 VIPER, §2.7). ``uda.tps_start`` (default 0, the reference,
whose teacher is a pre-trained TPS model) delays L_TPS and L_MMD to that step: a from-scratch teacher's
hard, unfiltered cross-frame labels collapse the target predictions otherwise (README "Synthetic video
benchmark"); the pseudo-labels are still computed for QuadMix's memory. Each part is optional by
config: without a teacher the step is the two-frame source-only baseline, without ``uda.mix`` it is
TPS (+ MMD).

Loss normalisation and upsampling (video_uda.md §2.3, §3.3; udass.md §2.6): the video references compute every
CE with ADVENT's ``loss_calc``, a mean over the *valid* (non-ignored) pixels, after upsampling the logits with
``nn.Upsample(..., align_corners=True)``. ``uda.loss_reduction: valid_pixels`` (default) does the same for
L_src, L_SS, L_ST, L_TPS and their aux terms (``all_pixels``: the mmseg mean over all pixels of the image
methods, which shrinks L_src, L_SS and L_ST by the labelled fraction relative to L_TPS, whose labels have no
ignored pixels); ``uda.align_corners: true`` (default) upsamples with ``align_corners=True`` in the losses,
the pseudo-labels' full-resolution maps, the fusio forward, TPS's rescale and the evaluation (``false``:
mmseg's).

Validation and test (udass.md §2.8, video_uda.md §1.6): the fused prediction on (frame t, frame t−1, flow
t→t−1), upsampled to the full-resolution labels (whole: once, straight from the logits, as the references);
whole or sliding-window inference (``eval.mode``) with both frames and the flow cropped together.

Flows read (:meth:`VideoUDAModule.target_flows_read`): the target batch holds only the flows the configured
method reads, so a run starts with TPS's published flows (which lack t→t−Δ−1) as downloaded: ``flow`` (t→t−1,
the student's pair), ``flow_k`` (t→t−Δ, the warp of the pseudo-labels), ``flow_k_prev`` (t−Δ→t−Δ−1, the
teacher's pair), ``flow_kk`` (t→t−Δ−1) only for the MMD's second target pair (``uda.mmd.target_weights`` with
two weights, the CNN reference) and ``flow_k_fwd`` (t−Δ→t) only for ``uda.pseudo.consistency``.

Hooks: ``uda.module: src.uda.video.module.VideoUDAModule`` selects this class; :func:`build_module` and
:func:`load_module` (used by src/train.py and src/eval.py) pick the class a config names.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class

from src.models.losses import weighted_cross_entropy
from src.models.temporal_aggregation import ClipLogits, ClipPredictor
from src.uda.module import UDAModule, _build
from src.uda.module import load_module as load_image_module
from src.uda.video.teacher_switch import SwitchTeacher
from src.uda.video.tps import TemporalPseudoSupervision, match_histograms
from src.uda.video.video_quadmix import Clip, VideoQuadMix

log = logging.getLogger(__name__)

SOURCE_KEYS = ("img", "img_prev", "gt", "flow")
TARGET_KEYS = ("img", "img_prev", "img_k", "img_k_prev", "flow", "flow_k", "flow_k_prev")
LOSS_REDUCTIONS = ("valid_pixels", "all_pixels")


def _require(node: dict, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in node]
    if missing:
        raise ValueError(
            f"the {what} batch has no {missing}: video methods need a video data config (data.video: true, "
            f"e.g. data=synthetic_video / viper_to_cityscapes_seq; batch contract of "
            f"src/data/video_datamodule.py)"
        )


class VideoUDAModule(UDAModule):
    """UDASS video (TPS + video QuadMix + prototype MMD) on a two-frame student (udass.md §2.6)."""

    def __init__(self, cfg: dict, *, load_pretrained: bool = True) -> None:
        super().__init__(cfg, load_pretrained=load_pretrained)
        cfg = self.cfg  # phase boundaries resolved to steps (src/utils/phases.py)
        uda = cfg["uda"]
        name = (cfg.get("model") or {}).get("name", "?")
        if not hasattr(self.student, "forward_clip"):
            raise ValueError(
                f"uda={self.method} trains a two-frame model, but model={name} is a single-frame segmentor: "
                f"use model=accel_{name} (src/models/temporal_aggregation.py), e.g. "
                f"model=accel_daformer_mitb5"
            )
        if self.fdm_target:
            raise ValueError(
                f"uda={self.method}: OMUDA FDM's target term (uda/fd=fdm) is an image term the video module "
                f"does not run; use uda/fd=imnet (the source feature distance) or uda/fd=none"
            )
        if getattr(self.mask, "uses_source", False):
            raise ValueError(
                f"uda.mask.mode={self.mask.mode}: the video module masks the current target pair only; use "
                f"uda.mask.mode=separatetrgaug (or separatetrg)"
            )
        if self.pseudo_labeler is not None and not isinstance(self.pseudo_labeler, TemporalPseudoSupervision):
            raise ValueError(
                f"uda={self.method}: the video module labels targets with TPS: set uda/pseudo=tps "
                f"(got {type(self.pseudo_labeler).__name__})"
            )
        if self.mix is not None and not isinstance(self.mix, VideoQuadMix):
            raise ValueError(
                f"uda={self.method}: the video module mixes clips with uda/mix=video_quadmix "
                f"(got {type(self.mix).__name__})"
            )
        self.lambda_t = float(uda.get("lambda_t", 1.0))
        self.tps_start = int(uda.get("tps_start", 0) or 0)
        if self.tps_start < 0:
            raise ValueError(f"uda.tps_start must be >= 0 (a step), got {self.tps_start}")
        self.aux_weight = float(uda.get("aux_weight", 0.1))
        self.loss_reduction = str(uda.get("loss_reduction", "valid_pixels"))
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"uda.loss_reduction must be one of {LOSS_REDUCTIONS} (valid_pixels: ADVENT's mean over the "
                f"labelled pixels, the video references), got {self.loss_reduction!r}"
            )
        self.align_corners = bool(uda.get("align_corners", True))
        #: the CE of every video loss term: reduction and upsampling of the configuration (module docstring)
        self.ce = partial(
            weighted_cross_entropy, reduction=self.loss_reduction, align_corners=self.align_corners
        )
        self.source_histogram_match = bool(uda.get("source_histogram_match", False))
        self.mmd = _build(uda.get("mmd"))
        if self.mmd is not None and self.teacher is None:
            raise ValueError(
                "uda.mmd aligns source and target prototypes: it needs the target branch (uda.teacher)"
            )
        if isinstance(self.teacher, SwitchTeacher):
            self._check_switch_teacher(name, uda, announce=load_pretrained)

    def _check_switch_teacher(self, name: str, uda: dict, *, announce: bool) -> None:
        """The frozen teacher must be a two-frame model; without a pre-trained one (checkpoint null) say, in
        one line, when TPS, the MMD and QuadMix start and when the student takes over the labels."""
        teacher = self.teacher
        if not teacher.own_model:
            teacher.model_name = name
        if not hasattr(teacher.model, "forward_clip"):
            raise ValueError(
                f"uda.teacher.model={teacher.model_name} is a single-frame segmentor: the video module's "
                f"teacher labels frame pairs; use a two-frame model (conf/uda/teacher/model/, accel_*)"
            )
        if teacher.checkpoint or not announce:
            return
        start_mix = getattr(self.mix, "quadmix_start", None)
        mix = f", QuadMix at step {start_mix}" if start_mix is not None else ""
        frozen = (
            f"; from step {self.tps_start} to {teacher.switch_step} the frozen *initial* weights label"
            if self.tps_start < teacher.switch_step
            else ""
        )
        log.info(
            "uda.teacher.checkpoint is null (no pre-trained teacher): TPS and the MMD start at step %d "
            "(uda.tps_start)%s, the student labels from step %d (uda.teacher.switch_step)%s; the reference "
            "schedule (TPS from step 0) needs a pre-trained teacher: "
            "uda/teacher/model=tps_accel_deeplabv2_r101 uda.teacher.checkpoint=<tps_*2city_pretrained.pth> "
            "(or a source-only run's last.ckpt)",
            self.tps_start, mix, teacher.switch_step, frozen,
        )  # fmt: skip

    # ------------------------------------------------------------------ helpers
    def source_clip(self, s: dict) -> Clip:
        _require(s, SOURCE_KEYS, "source")
        y = s["gt"]
        y_prev = s.get("gt_prev")
        if y_prev is None:
            y_prev = torch.full_like(y, 255)
        return Clip(x=self._prep(s["img"]), x_prev=self._prep(s["img_prev"]), flow=s["flow"].float(), y=y,
                    y_prev=y_prev)  # fmt: skip

    @torch.no_grad()
    def teacher_clip_logits(self, x: torch.Tensor, x_prev: torch.Tensor, flow: torch.Tensor) -> ClipLogits:
        """The teacher's two-frame outputs (fused, and fused aux if any; head resolution), no gradient."""
        teacher = self.teacher
        if hasattr(teacher, "clip_logits"):  # the reference's switch: a frozen model, then the student
            return teacher.clip_logits(x, x_prev, flow)
        teacher.set_pseudo_label_mode()
        return teacher.model.forward_clip(x, x_prev, flow)

    def masked_pair(self, x: torch.Tensor, x_prev: torch.Tensor, pl, g: torch.Generator):
        """Both frames through ``uda.mask`` (MIC's strong augmentation and block mask) with the same draws."""
        state = g.get_state()
        x_m, _ = self.mask(x, generator=g, pseudo_label=pl.y_full, confidence=pl.p_full)
        after = g.get_state()
        g.set_state(state)  # replay the same draws for frame t−1
        xp_m, _ = self.mask(x_prev, generator=g, pseudo_label=pl.y_full, confidence=pl.p_full)
        g.set_state(after)
        return x_m, xp_m

    def with_aux(self, main: torch.Tensor, out: ClipLogits, y: torch.Tensor, loss_fn=None):
        """``main + aux_weight · loss_fn(out.aux, y)`` when the model has an auxiliary classifier (§2.6.6);
        ``loss_fn`` defaults to the configured CE (:attr:`ce`)."""
        if out.aux is None or self.aux_weight == 0:
            return main
        return main + self.aux_weight * (loss_fn or self.ce)(out.aux, y)

    def tps_loss(self, logits: torch.Tensor, labels, valid, consistent=None, confidence=None) -> torch.Tensor:
        """L_TPS of the pseudo-labels (or a ŷ tensor) with the configured reduction and upsampling."""
        return self.pseudo_labeler.loss(
            logits, labels, valid, consistent=consistent, confidence=confidence,
            reduction=self.loss_reduction, align_corners=self.align_corners,
        )  # fmt: skip

    def clip_loss(self, x: torch.Tensor, x_prev: torch.Tensor, flow: torch.Tensor, y: torch.Tensor,
                  fusio_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """CE of the student's fused two-frame prediction (unweighted; ``uda.loss_reduction``)."""
        logits = self.student.forward_clip(
            self._prep(x), self._prep(x_prev), flow, fusio_mask=fusio_mask, align_corners=self.align_corners
        ).fused
        return self.ce(logits, y)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        t, g, opt = self.start_step()
        stage = self.timer
        logs: dict[str, torch.Tensor] = {}
        src = self.source_clip(batch["source"])
        has_target = self.teacher is not None and "target" in batch
        if self.source_histogram_match and "target" in batch:  # TPS source preprocessing (§2.6.1)
            d = self._prep(batch["target"]["img"])
            src = replace(src, x=match_histograms(src.x, d), x_prev=match_histograms(src.x_prev, d))
        self.keep_for_panel(x_s=src.x, y_s=src.y)  # image panels: no-op unless requested

        if self.teacher is not None:
            with stage("ema_update"):
                self.teacher.update(self.student, t)

        # L_src: the fused two-frame prediction on the labelled source clip (§2.6.2).
        with stage("source_fwd"):
            out_s = self.student.forward_clip(src.x, src.x_prev, src.flow, return_feat=self.fd is not None)
            logits_s = out_s.fused
            loss_src = self.with_aux(self.ce(logits_s, src.y), out_s, src.y)
        logs["train/loss_src"] = loss_src.detach()
        loss = loss_src
        if self.fd is not None:  # ImageNet feature distance, current source frame (daformer_mic.md §1.6)
            with stage("source_fd"):
                loss_fd = self.fd(out_s.feats, src.x, src.y)
            logs["train/loss_fd"] = loss_fd.detach()
            loss = loss + loss_fd
        del out_s
        mixes, masked = [], None

        if has_target:
            tgt = batch["target"]
            _require(tgt, TARGET_KEYS, "target")
            tps = self.pseudo_labeler
            x_t, x_tp = self._prep(tgt["img"]), self._prep(tgt["img_prev"])
            # L_TPS (§2.6.3): the teacher on the weak earlier pair (t−Δ, t−Δ−1), warped to t with flow t→t−Δ,
            # supervises the student on the strongly augmented current pair (t, t−1).
            with stage("teacher_fwd"):
                x_k, x_kp, f_kp, flipped = tps.weak_view(
                    self._prep(tgt["img_k"]), self._prep(tgt["img_k_prev"]), tgt["flow_k_prev"].float(), g
                )
                out_k = self.teacher_clip_logits(x_k, x_kp, f_kp)
            with stage("pseudo_label"):
                fwd = tgt.get("flow_k_fwd")
                pl = tps.labels(out_k.fused, tgt["flow_k"].float(), flipped, tuple(x_t.shape[-2:]),
                                flow_k_fwd=None if fwd is None else fwd.float(),
                                align_corners=self.align_corners)  # fmt: skip
                pl_aux = None
                if out_k.aux is not None:  # ŷ_aux: the same TPS labels from the teacher's aux output
                    pl_aux = tps.low_res_labels(out_k.aux, tgt["flow_k"].float(), flipped)
                else:  # a teacher without an aux head (a frozen model of another config): a student's aux
                    pl_aux = pl.y  # output learns the main labels, not nothing until the switch
                x_st, xp_st = tps.strong_view(x_t, x_tp, g)
            logs["train/pseudo_confidence"] = pl.p_full.mean()
            if pl.consistent is not None:
                logs["train/tps_consistent"] = pl.consistent.float().mean()
            if tps.threshold is not None:  # the share of ŷ that L_TPS learns (uda.pseudo.threshold)
                logs["train/tps_confident"] = tps.confident(pl.p).float().mean()
            self.keep_for_panel(x_t=x_t, y_t_hat=pl.y_full)
            if t >= self.tps_start:
                with stage("tps_fwd"):
                    # the student's pair: TPS's random rescale when configured (uda.pseudo.rescale)
                    x_in, xp_in, f_in = tps.rescale_view(
                        x_st, xp_st, tgt["flow"].float(), g, align_corners=self.align_corners
                    )
                    out_t = self.student.forward_clip(x_in, xp_in, f_in)
                    logits_t = out_t.fused
                    loss_tps = self.tps_loss(logits_t, pl, tgt.get("valid"))
                    if pl_aux is not None:
                        loss_tps = self.with_aux(
                            loss_tps,
                            out_t,
                            pl_aux,
                            lambda z, p: self.tps_loss(z, p, tgt.get("valid"), pl.consistent, pl.p),
                        )
                logs["train/loss_tps"] = (self.lambda_t * loss_tps).detach()
                loss = loss + self.lambda_t * loss_tps

                # L_MMD (§2.6.5): source vs temporally aggregated target class prototypes of the fused logits.
                if self.mmd is not None:
                    with stage("mmd"):
                        targets = [logits_t]
                        if self.mmd.num_target_predictions == 2:  # the (t, t−Δ−1) pair, flow t→t−Δ−1
                            _require(tgt, ("flow_kk",), "target")
                            x_a = self._prep(tgt["img_k_prev"])
                            targets.append(self.student.forward_clip(x_t, x_a, tgt["flow_kk"].float()).fused)
                        loss_mmd = self.mmd.weight * self.mmd(logits_s, src.y, targets)
                    logs["train/loss_mmd"] = loss_mmd.detach()
                    loss = loss + loss_mmd

                # MIC on the current pair (ours, module docstring): one augmentation and one block mask.
                if self.mask is not None:
                    with stage("mask"):
                        masked = self.masked_pair(x_t, x_tp, pl, g)
                    self.keep_for_panel(x_masked=masked[0])

            # Video QuadMix (§2.6.4): both mixed clips, frames, labels and flows mixed with the same masks.
            if self.mix is not None:
                with stage("mix"):
                    target = Clip(
                        x=x_st, x_prev=xp_st, flow=tgt["flow"].float(), y=pl.y_full, y_prev=pl.y_key
                    )
                    mixes = self.mix(src, target, target_raw=(x_t, x_tp), confidence=(pl.p_full, pl.p_key),
                                     target_flow_key=tgt["flow_k"].float(), generator=g, step=t)  # fmt: skip
                if mixes:
                    m = mixes[-1]
                    self.keep_for_panel(x_mix=m.x, y_mix=m.y, w_mix=torch.ones_like(m.y, dtype=torch.float32))
        with stage("fwd_bwd"):
            self.backward_term(loss, last=not mixes and masked is None)
        del logits_s, loss

        # L_SS (weight 1) and λ_T·L_ST on the fusio forward of each mixed clip, one backward each (§2.6.6).
        for i, m in enumerate(mixes):
            with stage("mix_fwd_bwd"):
                weight = 1.0 if m.name == "ss" else self.lambda_t
                loss_m = weight * self.clip_loss(m.x, m.x_prev, m.flow, m.y, fusio_mask=m.fusio_mask)
                logs[f"train/loss_{m.name}"] = loss_m.detach()
                self.backward_term(loss_m, last=i == len(mixes) - 1 and masked is None)
                del loss_m

        if masked is not None:
            with stage("mask_fwd_bwd"):
                tgt = batch["target"]
                with self.mask.forward_context(self.student):  # uda.mask.update_bn_stats
                    out_m = self.student.forward_clip(masked[0], masked[1], tgt["flow"].float())
                loss_mask = self.mask.weight * self.tps_loss(out_m.fused, pl, tgt.get("valid"))
                logs["train/loss_mask"] = loss_mask.detach()
                self.backward_term(loss_mask, last=True)
                del out_m, loss_mask

        self.optimizer_step_and_log(opt, logs, t, batch_size=src.x.shape[0])

    def post_step_logs(self) -> dict[str, torch.Tensor]:
        """How much of the warped previous frame the fusion layer uses (0 at the [I | 0] initialisation)."""
        c = self.num_classes
        return {"train/fusion_prev_weight": self.student.sf_layer.weight.detach()[:, c:].abs().mean()}

    # ------------------------------------------------------------------ evaluation
    def infer(self, model, x: torch.Tensor, out_size) -> torch.Tensor:
        """Two-frame models (a :class:`ClipPredictor`): whole-image evaluation upsamples the fused logits
        once, straight to ``out_size``, with ``uda.align_corners`` (udass.md §2.8); sliding windows as the
        image module, with the same ``align_corners``."""
        if isinstance(model, ClipPredictor):
            model = ClipPredictor(model.model, align_corners=self.align_corners)
            if self.eval_cfg.get("mode", "whole") != "slide":
                return model.predict_at(x, out_size)
        return super().infer(model, x, out_size)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _require(batch, ("img", "img_prev", "flow", "gt"), "validation")
        y = batch["gt"]
        z = ClipPredictor.stack(
            self._prep(batch["img"]), self._prep(batch["img_prev"]), batch["flow"].float()
        )
        self.val_confmat.update(self.infer(ClipPredictor(self.student), z, y.shape[-2:]).argmax(1), y)
        if self.val_confmat_teacher is not None and self.eval_cfg.get("teacher", True):
            teacher = ClipPredictor(getattr(self.teacher, "eval_model", lambda: self.teacher.model)())
            self.val_confmat_teacher.update(self.infer(teacher, z, y.shape[-2:]).argmax(1), y)

    # ------------------------------------------------------------------ data the method reads
    @staticmethod
    def target_flows_read(cfg: dict) -> tuple[str, ...]:
        """The target flows this configuration reads (module docstring): none without a teacher (two-frame
        source only); TPS's ``flow``, ``flow_k``, ``flow_k_prev``; ``flow_kk`` for the MMD's second target
        pair; ``flow_k_fwd`` for the consistency mask."""
        uda = cfg.get("uda") or {}
        if not (uda.get("teacher") or {}).get("_target_"):
            return ()
        keys = ["flow", "flow_k", "flow_k_prev"]
        mmd = uda.get("mmd") or {}
        if mmd.get("_target_") and len(mmd.get("target_weights") or (0.5, 0.5)) == 2:
            keys.append("flow_kk")
        if (uda.get("pseudo") or {}).get("consistency"):
            keys.append("flow_k_fwd")
        return tuple(keys)


# ---------------------------------------------------------------------------- class selection
def module_class(cfg: dict) -> type[UDAModule]:
    """The LightningModule class a config names in ``uda.module`` (default: the image UDAModule)."""
    path = (cfg.get("uda") or {}).get("module")
    if not path:
        return UDAModule
    try:
        cls = get_class(str(path))
    except Exception as e:  # noqa: BLE001 - one readable message
        raise ValueError(f"uda.module={path} is not an importable class ({e})") from e
    if not (isinstance(cls, type) and issubclass(cls, UDAModule)):
        raise ValueError(f"uda.module={path} is not a subclass of src.uda.module.UDAModule")
    return cls


def build_module(cfg: dict, **kwargs: Any) -> UDAModule:
    """Build the module class of ``uda.module`` from a resolved config (a plain dict)."""
    return module_class(cfg)(cfg, **kwargs)


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> UDAModule:
    """:func:`src.uda.module.load_module`, returned as the class its config names (``uda.module``)."""
    module = load_image_module(path, map_location=map_location)
    cls = module_class(module.cfg)
    if type(module) is not cls:
        rebuilt = cls(module.cfg, load_pretrained=False)
        rebuilt.load_state_dict(module.state_dict())
        rebuilt.eval()
        module = rebuilt
    if isinstance(module, VideoUDAModule) and "align_corners" not in (module.cfg.get("uda") or {}):
        # a video checkpoint from before uda.align_corners existed: it was trained and reported with mmseg's
        # align_corners=False, and is evaluated so (not with today's default, ADVENT's True)
        module.align_corners = False
        log.info("%s: a video checkpoint without uda.align_corners: evaluated with align_corners=False, "
                 "as it was trained", path)  # fmt: skip
    return module

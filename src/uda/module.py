"""The UDA LightningModule: a student, its EMA teacher and the strategy objects of a method.

One training step, in the order of the reference (daformer_mic.md §1.2); every stage is one call to a
strategy object chosen by config (`uda/teacher`, `uda/pseudo`, `uda/mix`, `uda/mask`, `uda/fd`), so any
strategy composes with any other:

    teacher.update(student, t)                       EMA from the previous step's student
    L_src  = CE(f(x_s), y_s) [+ L_FD(x_s, y_s)]      source loss (+ ImageNet feature distance)
    y_t_hat, w_t = pseudo_labeler(teacher(x_t))      pseudo-labels and their weights
    x_mix, y_mix, w_mix = mix(x_s, y_s, x_t, ...)    e.g. DACS ClassMix + strong augmentation
    L_mix  = CE_w(f(x_mix), y_mix, w_mix)
    L_mask = λ · CE_w(f(mask(aug(x_t))), y_t_hat, w_t)   MIC masked image consistency
    one optimizer step, then the lr schedule step.

The module is built from the resolved config alone (a plain dict stored in the checkpoint), so a
checkpoint loads without Hydra: see `load_module`.

Scale and speed (`train.*` in conf/train.yaml, README "Performance"):

- **Several backward passes under DDP** (`train.backward`): `deferred` (default) runs every backward but
  the last of a step inside DDP's `no_sync()`, so gradients accumulate locally and are all-reduced once,
  during the last backward (one all-reduce of the gradients per step, overlapped with that backward);
  `every` syncs in every backward (Lightning's behaviour for manual optimisation: k all-reduces for k
  backward passes, same result); `sum` adds the loss terms and runs one backward (one all-reduce, but
  every stage's activations stay alive until the end of the step: more memory). Gradients are the same
  in all three (a sum of gradients is the gradient of the sum). `deferred` is the default: the memory of
  the reference (one stage's activations at a time) with `sum`'s single all-reduce. Measured (DDP gloo,
  DACS, 2 ranks: deferred and sum all-reduce the gradients once a step, every once per backward pass; one
  CPU process, MIC 128 crops: sum 6-10 % faster a step, +7 % peak memory, growing with the crop).
- **Non-finite losses** (`train.on_nonfinite`): after the backward passes, the loss terms (and the
  gradients, unless a 16-bit GradScaler owns that check) are tested once per step (one host sync; under
  DDP the decision is all-reduced so every rank agrees). `stop` raises `NonFiniteLossError` naming the
  step and the loss term before the optimizer step; `skip` drops the gradients and skips the update.
  Either way the student, hence the EMA teacher, never takes non-finite weights.
- **AMP**: teacher softmax, pseudo-label confidences and weights, and every loss are float32 (the strategy
  objects cast; `weighted_cross_entropy` runs with autocast off).
- `train.channels_last`, `train.compile` (`nn.Module.compile` of student and teacher: state-dict keys
  unchanged, checkpoints stay interchangeable), `train.fused_adamw` (`auto`: the fused AdamW kernel
  on every device that has one, CUDA and CPU included).
"""

from __future__ import annotations

import copy
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.data.classes import default_class_names, resolve_class_lists
from src.metrics.miou import confusion_matrix_metric, resolve_subsets, summarize
from src.models.inference import slide_inference, whole_inference
from src.models.losses import weighted_cross_entropy
from src.optim import PolyWarmup, param_groups
from src.uda.diagnostics import pseudo_label_quality
from src.uda.mixing.quadmix import QuadMix, feature_mix
from src.utils.cli import RunStopped
from src.utils.phases import resolve_phases
from src.utils.safe_load import check_checkpoint_config, checkpoint_config, load_weights_file
from src.utils.timing import StageTimer

log = logging.getLogger(__name__)


BACKWARD_MODES = ("deferred", "every", "sum")
NONFINITE_ACTIONS = ("stop", "skip")


class NonFiniteLossError(RunStopped):
    """A loss term or gradient was NaN/inf (train.on_nonfinite=stop); raised before the optimizer step. A
    RuntimeError; `src.utils.cli.readable_errors` prints it as one line (RunStopped)."""


FULL_PRECISION = ("32-true", "32", "64-true", "64")


def _build(node: Any, **kwargs: Any) -> Any:
    """Instantiate an optional config node (None / {} / {enabled: false} -> None)."""
    if not node or not node.get("_target_"):
        return None
    if kwargs:  # live objects (the student, an encoder) are passed to the built partial, not the config
        return instantiate(OmegaConf.create(node), _partial_=True)(**kwargs)
    return instantiate(OmegaConf.create(node))


class UDAModule(pl.LightningModule):
    #: ``align_corners`` of the evaluation's bilinear upsampling (mmseg: False; the video module's
    #: ``uda.align_corners``, ADVENT's True)
    align_corners: bool = False

    @staticmethod
    def target_flows_read(cfg: dict) -> tuple[str, ...] | None:
        """The target flow keys of a video batch this method reads (None: every flow of the batch contract;
        image methods do not restrict it). src/train.py passes them to the video data module."""
        return None

    def __init__(self, cfg: dict, *, load_pretrained: bool = True) -> None:
        super().__init__()
        self.automatic_optimization = False  # several backward passes, one optimizer step
        # Phase boundaries given as fractions of trainer.max_steps become steps (src/utils/phases.py).
        cfg = resolve_phases(cfg, warn=load_pretrained)
        self.save_hyperparameters({"cfg": cfg})
        self.cfg = cfg
        model_cfg = dict(cfg["model"])
        model_cfg.pop(
            "init_from", None
        )  # weights of a whole trained segmentor: src/uda/init_from.py (src.train)
        if not load_pretrained:
            model_cfg["pretrained"] = None
        elif model_cfg.get("pretrained") == "synthetic" and (cfg.get("paths") or {}).get("data_dir"):
            # the offline ImageNet stand-in is cached beside the data (src/models/synthetic_weights)
            model_cfg.setdefault("pretrained_dir", str(Path(cfg["paths"]["data_dir"]) / "pretrained"))
        self.student = _build(model_cfg)
        data = cfg["data"]
        self.num_classes = int(data["num_classes"])
        self.class_names = list(data.get("class_names") or default_class_names(self.num_classes))
        # The strategies' class lists (`things`, `rare`, names or ids) -> the run's ids (src/data/classes.py)
        uda = resolve_class_lists(cfg["uda"], self.class_names, classes_file=data.get("classes_file"))
        self.method = uda.get("name", "uda")
        self.teacher = _build(uda.get("teacher"), student=self.student)
        self.pseudo_labeler = _build(uda.get("pseudo"))
        self.mix = _build(uda.get("mix"))
        self.mask = _build(uda.get("mask"))
        fd = uda.get("fd")
        if fd and fd.get("_target_") and load_pretrained and not model_cfg.get("pretrained"):
            log.warning(
                "uda.fd (%s) is on but model.pretrained is null: the feature distance then pulls the student "
                "toward a *random* encoder, not an ImageNet one. Pass ImageNet weights "
                "(model.pretrained=/path/to/mit_bX.pth), model.pretrained=synthetic (the offline stand-in), "
                "or turn it off with uda/fd=none",
                fd["_target_"].rsplit(".", 1)[-1],
            )
        # The frozen ImageNet encoder starts from the same weights as the student (the reference loads
        # the same mit_b5.pth into both), so a copy of the freshly initialised backbone is exact.
        self.fd = _build(fd, encoder=copy.deepcopy(self.student.backbone)) if fd else None
        # OMUDA FDM's target term needs the masked student features, so it runs with a masking module.
        self.fdm_target = (
            self.mask is not None and hasattr(self.fd, "target_loss") and getattr(self.fd, "target", False)
        )
        pseudo = uda.get("pseudo") or {}
        rows = int(pseudo.get("ignore_top") or 0) + int(pseudo.get("ignore_bottom") or 0)
        crop = cfg["data"].get("crop_size")
        crop_h = (crop if isinstance(crop, int) else list(crop or [0])[0]) or 0
        if rows and crop_h and rows >= crop_h:
            raise ValueError(
                f"uda.pseudo.ignore_top + ignore_bottom = {rows} rows leave no row of the {crop_h}-row "
                f"target crop (data.crop_size): every pseudo-label would get weight 0. Lower "
                f"data.pseudo_label_rows (or uda.pseudo.ignore_top / ignore_bottom), e.g. "
                f"data.pseudo_label_rows=[0,0] for data without an ego-vehicle hood"
            )
        if self.teacher is not None and self.pseudo_labeler is None:
            raise ValueError("uda.teacher is set but uda.pseudo is not: self-training needs a pseudo-labeler")
        if (self.mix is not None or self.mask is not None) and self.teacher is None:
            raise ValueError(
                "uda.mix / uda.mask train on pseudo-labels, but uda.teacher is none: "
                "add uda/teacher=ema uda/pseudo=dacs, or start from uda=dacs"
            )

        self.subsets = resolve_subsets(data.get("eval_subsets") or ["all"], self.num_classes)
        self.eval_cfg = dict(cfg.get("eval") or {})
        self.val_confmat = confusion_matrix_metric(self.num_classes)
        self.val_confmat_teacher = (
            confusion_matrix_metric(self.num_classes) if self.teacher is not None else None
        )
        self.last_summary: dict | None = None
        self.last_teacher_summary: dict | None = None
        self.seed = int(cfg.get("seed", 0))
        self.timer = StageTimer(enabled=False)  # scripts/benchmark.py turns it on
        tr = dict(cfg.get("train") or {})  # older checkpoints have no `train` node: the defaults
        self.backward_mode = str(tr.get("backward", "deferred"))
        self.on_nonfinite = str(tr.get("on_nonfinite", "stop"))
        if self.backward_mode not in BACKWARD_MODES:
            raise ValueError(f"train.backward must be one of {BACKWARD_MODES}, got {self.backward_mode!r}")
        if self.on_nonfinite not in NONFINITE_ACTIONS:
            raise ValueError(
                f"train.on_nonfinite must be one of {NONFINITE_ACTIONS}, got {self.on_nonfinite!r}"
            )
        self.channels_last = bool(tr.get("channels_last", False))
        self.compile_mode = tr.get("compile", False)  # false | true | a torch.compile mode name
        self.fused_adamw = tr.get("fused_adamw", "auto")
        self.skipped_steps = 0
        self._pending_loss: torch.Tensor | None = None
        # Image panels (src/callbacks/image_panels.py): the callback sets `panel_request` before a step it
        # wants to draw; that step then keeps detached CPU copies of its intermediate tensors in
        # `panel_tensors`. Off (one bool check per stage) on every other step.
        self.panel_request: bool = False
        self.panel_tensors: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        o = self.cfg["optim"]
        groups = param_groups(self.student, lr=o["lr"], weight_decay=o["weight_decay"],
                              head_lr_mult=o["head_lr_mult"])  # fmt: skip
        # Fused AdamW (one kernel over all parameters) wherever torch has one: CUDA, and the CPU, where it
        # measured 2.4x faster than foreach (6.3 vs 14.9 ms a step for MiT-B0). The module is on its
        # device here.
        fused = bool(self.fused_adamw)
        if self.fused_adamw == "auto":
            from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

            fused = self.device.type in _get_fused_kernels_supported_devices()
        opt = torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"],
                                **({"fused": True} if fused else {}))  # fmt: skip
        # Trainable strategy parts (OMUDA FDM's MGD generator) start untrained: head learning rate.
        extra = [p for p in (self.fd.parameters() if self.fd is not None else []) if p.requires_grad]
        if extra:
            opt.add_param_group({"params": extra, "lr": o["lr"] * o["head_lr_mult"], "name": "strategy",
                                 "weight_decay": o["weight_decay"]})  # fmt: skip
        sched = PolyWarmup(
            max_steps=int(self.cfg["trainer"]["max_steps"]),
            warmup_steps=o["warmup_steps"],
            warmup_ratio=o["warmup_ratio"],
            power=o["power"],
        )
        return [opt], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, sched), "interval": "step"}]

    def setup(self, stage: str) -> None:
        """`train.channels_last` / `train.compile`, applied once before the optimizer is built; when the data
        module streams packed chunks, rare-class donors are read from its packed source split too; otherwise
        the source split's class -> files index is computed on first use where it can be (folder data)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        paster = getattr(self.mix, "rare_paster", None)
        if paster is not None and getattr(dm, "streaming", False) and getattr(dm, "source", None) is not None:
            paster.use_dataset(dm.source)
        elif paster is not None and stage == "fit" and hasattr(dm, "ensure_class_stats"):
            dm.ensure_class_stats()
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # 4-D weights (convolutions); inputs in `_prep`
        if self.compile_mode and not getattr(self, "_compiled", False):
            mode = None if self.compile_mode is True else str(self.compile_mode)
            # Backbone and head of student and teacher: covers forward, predict and extract_feat. In place
            # (nn.Module.compile), so parameter names, hence checkpoint keys, are unchanged.
            for m in (self.student, getattr(self.teacher, "model", None)):
                for part in (getattr(m, "backbone", None), getattr(m, "head", None)):
                    if part is not None:
                        part.compile(mode=mode)
            self._compiled = True

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def _ddp(self):
        """The DistributedDataParallel wrapper of this module, or None (single process)."""
        trainer = self._trainer
        model = getattr(trainer.strategy, "model", None) if trainer is not None else None
        return model if isinstance(model, torch.nn.parallel.DistributedDataParallel) else None

    def backward_term(self, loss: torch.Tensor, *, last: bool) -> None:
        """One loss term's backward pass (`train.backward`, see the module docstring).

        `last` marks the step's final backward: under DDP (`deferred`) it is the one that all-reduces the
        gradients accumulated by the earlier passes; with `sum` it runs the single backward of the sum.
        """
        if self.backward_mode == "sum":
            self._pending_loss = loss if self._pending_loss is None else self._pending_loss + loss
            if last:
                total, self._pending_loss = self._pending_loss, None
                self.manual_backward(total)
            return
        ddp = self._ddp() if self.backward_mode == "deferred" and not last else None
        if ddp is not None:
            with ddp.no_sync():
                self.manual_backward(loss)
        else:
            self.manual_backward(loss)

    def check_finite(self, logs: dict[str, torch.Tensor], step: int) -> bool:
        """True if every loss term (and gradient) is finite; on all ranks the same answer.

        `stop`: raises NonFiniteLossError naming the step and the term; `skip`: returns False.
        """
        names = [k for k in logs if k.startswith("train/loss")]
        vals = [logs[k].detach().float().reshape(()) for k in names]
        scaler = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None)
        grads = [p.grad for p in self.parameters() if p.grad is not None] if scaler is None else []
        if grads:  # with a GradScaler, inf gradients are its business (it skips the step itself)
            norms = torch._foreach_norm(grads)
            vals.append(torch.linalg.vector_norm(torch.stack(norms)))
        values = torch.stack(vals).tolist() if vals else []  # the one host sync of the check
        flags = [math.isfinite(v) for v in values]
        grads_ok = flags.pop() if grads else True
        values = values[: len(names)]
        local_ok = all(flags) and grads_ok
        ok = local_ok
        if self._trainer is not None and self.trainer.world_size > 1:
            ok = bool(self.trainer.strategy.reduce_boolean_decision(local_ok, all=True))
        if ok:
            return True
        bad = [f"{n} = {v:.4g}" for n, v, f in zip(names, values, flags) if not f]
        if bad:
            msg = f"non-finite loss at step {step}: {', '.join(bad)}"
        elif not grads_ok:
            msg = f"non-finite gradient at step {step} (its norm is not finite; the loss terms are)"
        else:
            msg = f"non-finite loss at step {step}: a loss term on another rank"
        if self.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"{msg}. The run stopped before the optimizer step (the weights stay finite): "
                f"{self.nonfinite_advice()}"
            )
        self.skipped_steps += 1
        log.warning("%s: step skipped (train.on_nonfinite=skip, %d so far)", msg, self.skipped_steps)
        return False

    def nonfinite_advice(self) -> str:
        """What to change after a non-finite loss, for this run: a lower `optim.lr` or skipping such steps;
        32-bit precision only when the run is not 32-bit already; resuming only when the run directory holds
        a checkpoint."""
        lr = (self.cfg.get("optim") or {}).get("lr")
        tips = [f"lower optim.lr (now {lr:g})" if isinstance(lr, (int, float)) else "lower optim.lr",
                "set train.on_nonfinite=skip to skip such steps"]  # fmt: skip
        trainer = self._trainer
        precision = getattr(trainer, "precision", None) or (self.cfg.get("trainer") or {}).get("precision")
        if precision is not None and str(precision) not in FULL_PRECISION:
            tips.append(f"train in full precision, trainer.precision=32-true (now {precision})")
        run_dir = Path(trainer.default_root_dir) if trainer is not None else None
        if run_dir is not None and any(
            [*run_dir.glob("checkpoints/*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
        ):  # fmt: skip
            tips.append(f"resume from the last checkpoint, ckpt_path=last hydra.run.dir={run_dir}")
        return ", or ".join([", ".join(tips[:-1]), tips[-1]]) if len(tips) > 1 else tips[0]

    def skip_update(self, opt) -> None:
        """Drop this step's gradients so that the optimizer step changes nothing (AdamW skips parameters
        without a gradient). A 16-bit GradScaler needs gradients to inspect: they are set to NaN so that it
        skips the step itself (and lowers its scale)."""
        scaler = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None)
        if scaler is None:
            opt.zero_grad(set_to_none=True)
            return
        for p in self.parameters():
            if p.grad is not None:
                p.grad.fill_(float("nan"))

    def step_generator(self, step: int) -> torch.Generator:
        """All randomness of step t is a function of (seed, rank, t), so a resumed run is exact.

        The global RNG (dropout, drop-path) is re-seeded too: data loaders draw their base seed from
        it whenever an iterator starts (validation, resume), so its state alone would not carry over.
        """
        seed = (self.seed * 1_000_003 + self.global_rank * 7919 + step) % (2**63)
        torch.manual_seed(seed)
        g = torch.Generator()
        g.manual_seed(seed ^ 0x5DEECE66D)
        return g

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        t, g, opt = self.start_step()
        x_s, y_s = self._prep(batch["source"]["img"]), batch["source"]["gt"]
        logs: dict[str, torch.Tensor] = {}
        # Which backward is the step's last (DDP syncs there; `sum` runs the single backward there).
        has_target = self.teacher is not None and "target" in batch
        do_mix, do_mask = has_target and self.mix is not None, has_target and self.mask is not None
        stage = self.timer
        self.keep_for_panel(x_s=x_s, y_s=y_s)  # image panels: no-op unless requested

        if self.teacher is not None:
            with stage("ema_update"):
                self.teacher.update(self.student, t)

        # Source supervision (+ ImageNet feature distance on the same forward, one backward).
        with stage("source_fwd_bwd"):
            loss_src, f_s = self.seg_loss(x_s, y_s, return_feat=True)
            logs["train/loss_src"] = loss_src.detach()
            loss = loss_src
            if self.fd is not None:  # HRDA: context features; the frozen encoder sees the context view
                loss_fd = self.fd(f_s, self.student.feature_input(x_s), y_s)
                logs["train/loss_fd"] = loss_fd.detach()
                loss = loss + loss_fd
            self.backward_term(loss, last=not (do_mix or do_mask))
            del f_s, loss

        if has_target:
            x_t = self._prep(batch["target"]["img"])
            with stage("teacher_fwd"):
                probs_t = self.teacher.predict(x_t)
            with stage("pseudo_label"):
                y_t_hat, w_t, p_t = self.pseudo_labeler(probs_t, valid=batch["target"].get("valid"), step=t)
            logs["train/pseudo_weight"] = w_t.mean().detach()
            if "diag_gt" in batch["target"]:  # the target's own labels: read by this diagnostic only
                logs.update(pseudo_label_quality(y_t_hat, w_t, batch["target"]["diag_gt"]))
            self.keep_for_panel(x_t=x_t, y_t_hat=y_t_hat, w_t=w_t)  # image panels: no-op unless requested

            if self.mix is not None:  # ClassMix, or QuadMix's two compound samples
                with stage("mix"):
                    mixes = self.mix(x_s, y_s, x_t, y_t_hat, w_t, generator=g, step=t, p_max=p_t)
                    mixes = mixes if isinstance(mixes, list) else [mixes]
                m = mixes[0]  # image panels show the first sample
                self.keep_for_panel(x_mix=m.x_mix, y_mix=m.y_mix, w_mix=m.w_mix)
                with stage("mix_fwd_bwd"):
                    logs["train/loss_mix"] = self.mixed_loss(mixes, last=not do_mask)

            if self.mask is not None:  # MIC (random blocks) or OMUDA CAM (context-aware blocks)
                with stage("mask"):
                    # MIC's mask_mode: the target batch, or one source + one target image ('separate')
                    m = self.mask.inputs(x_s, y_s, x_t, y_t_hat, w_t, p_t)
                    x_masked, keep = self.mask(m.x, generator=g, pseudo_label=m.y, confidence=m.confidence)
                self.keep_for_panel(x_masked=x_masked)  # image panels: no-op unless requested
                with stage("mask_fwd_bwd"):
                    with self.mask.forward_context(self.student):  # uda.mask.update_bn_stats (default: MIC's)
                        loss_m, f_m = self.seg_loss(x_masked, m.y, m.w, return_feat=True)
                    loss_mask = self.mask.weight * loss_m
                    logs["train/loss_mask"] = loss_mask.detach()
                    loss = loss_mask
                    if self.fdm_target:  # OMUDA FDM: masked-image features vs the frozen encoder on clean x_t
                        r = m.target_rows  # the target images of the masked batch
                        f_t = [f[r] for f in f_m] if isinstance(f_m, (list, tuple)) else f_m[r]
                        n = r.stop - r.start
                        x_t_feat = self.student.feature_input(x_t[:n])  # HRDA: the context view
                        loss_fdm = self.fd.target_loss(
                            f_t, x_t_feat, y_t_hat[:n], w_t[:n], keep[r], generator=g, confidence=p_t[:n]
                        )
                        logs["train/loss_fdm"] = loss_fdm.detach()
                        loss = loss + loss_fdm
                    self.backward_term(loss, last=True)
                    del loss_m, f_m, loss
            logs.update(self.strategy_diagnostics())

        self.optimizer_step_and_log(opt, logs, t, batch_size=x_s.shape[0])

    def start_step(self) -> tuple[int, torch.Generator, Any]:
        """Every training step starts here: (step t, its generator, the optimizer with gradients zeroed)."""
        t = self.global_step
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self._pending_loss = None
        return t, self.step_generator(t), opt

    def optimizer_step_and_log(self, opt, logs: dict[str, torch.Tensor], t: int, *, batch_size: int) -> None:
        """The end of every training step: one optimizer step (skipped, but counted, when a logged loss is
        not finite and ``on_nonfinite=skip``), the lr schedule step, then the step's logs (plus
        :meth:`post_step_logs`)."""
        with self.timer("optimizer"):
            if not self.check_finite(logs, t):
                self.skip_update(opt)  # the step still counts (data, seeds and schedule stay aligned)
            opt.step()
            self.lr_schedulers().step()
        if self.on_nonfinite == "skip":
            logs["train/skipped_steps"] = torch.tensor(float(self.skipped_steps))
        logs["train/lr"] = torch.tensor(opt.param_groups[0]["lr"])
        logs.update(self.post_step_logs())
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("loss", logs["train/loss_src"], prog_bar=True, on_step=True, batch_size=batch_size)

    def post_step_logs(self) -> dict[str, torch.Tensor]:
        """Diagnostics read after the optimizer step (none here; subclasses add theirs)."""
        return {}

    def keep_for_panel(self, **tensors: torch.Tensor) -> None:
        """Image panels (src/callbacks/image_panels.py): detached CPU copies, only on requested steps."""
        if self.panel_request:
            self.panel_tensors.update({k: v.detach().to("cpu", copy=True) for k, v in tensors.items()})

    def seg_loss(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None, *,
                 return_feat: bool = False):  # fmt: skip
        """The student's training loss on (x, y, w) by the segmentor's own rule: CE_w(f(x), y, w) for a plain
        encoder-decoder, 0.9 fused + 0.1 detail for the HRDA host (src/models/hrda.py); with `return_feat`
        also the features for FD / FDM (HRDA: the context features)."""
        return self.student.seg_loss(x, y, w, loss_fn=weighted_cross_entropy, return_feat=return_feat)

    def mixed_loss(self, mixes: list, *, last: bool = True) -> torch.Tensor:
        """Σ_k λ_k CE_w(f(x_mix_k), y_mix_k, w_mix_k); one backward per sample unless QuadMix blends the
        decoder embeddings of its samples (feature-level mixing), which needs one joint backward."""
        if not any(getattr(m, "feature_partner", None) is not None for m in mixes):
            total = torch.zeros((), device=mixes[0].x_mix.device)
            for i, m in enumerate(mixes):
                loss = m.loss_weight * self.seg_loss(self._prep(m.x_mix), m.y_mix, m.w_mix)
                self.backward_term(loss, last=last and i == len(mixes) - 1)
                total = total + loss.detach()
            return total
        # Embeddings of all samples in one call (HRDA: one shared detail box, so that they align).
        student = self.student
        embs = student.embed([self._prep(m.x_mix) for m in mixes])
        loss = torch.zeros((), device=mixes[0].x_mix.device)
        for m, e in zip(mixes, embs):
            p = m.feature_partner
            if p is not None:
                e = student.blend(e, embs[p.index], p.region, partial(feature_mix, alpha=p.alpha, mode=p.mode,
                                                                      detach_b=p.detach))  # fmt: skip
            loss_m = student.embedding_loss(e, m.y_mix, m.w_mix, loss_fn=weighted_cross_entropy)
            loss = loss + m.loss_weight * loss_m
        self.backward_term(loss, last=last)
        return loss.detach()

    def strategy_diagnostics(self) -> dict[str, torch.Tensor]:
        """What the strategies report about themselves (CAM foreground share, CDM keep rate)."""
        out = {}
        masker = getattr(self.mask, "masker", None)
        if getattr(masker, "last_rho", None) is not None:
            out["train/cam_fg_cells"] = masker.last_rho.float().mean()
        keep = getattr(self.pseudo_labeler, "last_keep_rate", None)
        if keep is not None and torch.isfinite(keep).any():  # of the weight applied (the host's in warm-up)
            out["train/cdm_keep_rate"] = keep.nanmean()
        active = getattr(self.fd, "last_active_cells", None)
        if active is not None:
            out["train/fdm_active_cells"] = active
        return out

    # ------------------------------------------------------------------ evaluation
    def infer(self, model: torch.nn.Module, x: torch.Tensor, out_size) -> torch.Tensor:
        e = self.eval_cfg
        if e.get("mode", "whole") == "slide":
            return slide_inference(
                model,
                x,
                num_classes=self.num_classes,
                crop_size=tuple(e["crop_size"]),
                stride=tuple(e["stride"]),
                batched=e.get("batched", True),
                out_size=out_size,
                align_corners=self.align_corners,
            )
        return whole_inference(model, x, out_size=out_size, align_corners=self.align_corners)

    def on_validation_start(self) -> None:
        """DDP: every rank evaluates its shard with rank 0's buffers. BatchNorm running statistics (of the
        student, and of the teacher whose BN runs in train mode on each rank's target batch) drift apart
        during a step; DDP only re-broadcasts them at the next training forward."""
        if self._trainer is not None and self.trainer.world_size > 1:
            import torch.distributed as dist

            for b in self.buffers():
                dist.broadcast(b, src=0)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, y = batch["img"], batch["gt"]
        self.val_confmat.update(self.infer(self.student, x, y.shape[-2:]).argmax(1), y)
        if self.val_confmat_teacher is not None and self.eval_cfg.get("teacher", True):
            self.val_confmat_teacher.update(self.infer(self.teacher.model, x, y.shape[-2:]).argmax(1), y)

    def on_validation_epoch_end(self) -> None:
        self.last_summary = summarize(self.val_confmat.compute(), self.class_names, self.subsets)
        self.val_confmat.reset()
        s = self.last_summary
        logs = {"val/mIoU": s["mIoU"] or 0.0}
        logs.update({f"val/mIoU{k}": v for k, v in s["subsets"].items() if v is not None and k != "all"})
        logs.update({f"val/IoU/{n}": v for n, v in s["per_class"].items() if v is not None})
        if self.val_confmat_teacher is not None and self.eval_cfg.get("teacher", True):
            self.last_teacher_summary = summarize(
                self.val_confmat_teacher.compute(), self.class_names, self.subsets
            )
            self.val_confmat_teacher.reset()
            logs["val/teacher_mIoU"] = self.last_teacher_summary["mIoU"] or 0.0
        self.log_dict(logs, sync_dist=True)  # the same numbers on every rank (the metric is reduced)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # QuadMix's one-step memory is per rank: store every rank's, so a multi-GPU resume is exact.
        if isinstance(self.mix, QuadMix):
            key = "mix._extra_state"
            checkpoint["state_dict"][key] = self.mix.gather_extra_state(checkpoint["state_dict"].get(key))


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> UDAModule:
    """Rebuild a trained module from a checkpoint file alone (no Hydra run, no code executed on load): the
    file is read weights-only and its stored config may only name the library's own targets
    (src/utils/safe_load.py), checked before anything of it is built."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass ckpt_path=<path to a .ckpt file>")
    ckpt = load_weights_file(path, map_location=map_location, expected="a .ckpt written by src.train")
    cfg = checkpoint_config(ckpt)
    if cfg is None:
        raise ValueError(
            f"{path} holds no library config (hyper_parameters.cfg): not a checkpoint of this library"
        )
    check_checkpoint_config(cfg, path)  # every _target_ and uda.module: the library's own, or refused
    module = UDAModule(cfg, load_pretrained=False)
    result = module.load_state_dict(ckpt.get("state_dict") or {}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path} does not match the model of its own config: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected (e.g. "
            f"{result.unexpected_keys[:3]})"
        )
    module.eval()
    return module

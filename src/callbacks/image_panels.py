"""Image panels of the training step, every N steps: to W&B (with segmentation-mask overlays) or as PNGs.

One panel shows, for the first `max_images` samples of a training batch, side by side:

    source image | source label | target image | [target label] | teacher pseudo-label | pseudo-label
    weight | mixed sample | mixed label | masked sample | student prediction (on the target image)

Columns a method does not produce are left out (source-only: no pseudo-label, mix or mask; DACS: no mask).
Labels are drawn in the Cityscapes palette over the image (`src.utils.visualize.overlay`), the weight map
as a heat map from 0 (dark) to 1 (yellow), and a class legend closes the panel. The mixed sample is the
first one of the step (QuadMix: the T->(S->S) compound); the masked sample is the strongly augmented,
masked target image the MIC / CAM loss trains on.

How the tensors get here (cheaply): before a due step the callback sets `UDAModule.panel_request`; that
step then keeps detached CPU copies of its intermediate tensors in `UDAModule.panel_tensors`
(`UDAModule.keep_for_panel`). Every other step costs one bool check per stage. The student prediction is
one extra no-grad forward in eval mode after the due step (no weights, buffers or RNG state change, so a
resumed run stays exact).

Sinks: every `WandbLogger` gets `panels/grid` (the rendered panel) and per-image `wandb.Image`s with
interactive masks (`panels/source`, `panels/target`, `panels/mixed`, `panels/masked`); offline mode
(`WANDB_MODE=offline`) stores them in the run folder for `wandb sync`. Without a W&B logger (e.g.
`logger=csv`) the panel is written as `<dirpath>/step<NNNNNN>.png`. Without any logger the callback does
nothing (no request, no copy, no forward).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from src.data.classes import IGNORE_INDEX, palette_for
from src.models.inference import whole_inference
from src.utils.visualize import (
    colorize,
    denormalize,
    grid,
    heatmap,
    legend,
    overlay,
    resize_to_height,
    save_png,
)

log = logging.getLogger(__name__)

# Column order of the panel: (key, title). A column is drawn when its tensor is there.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("x_s", "source"),
    ("y_s", "source label"),
    ("x_t", "target"),
    ("y_t", "target label"),
    ("y_t_hat", "pseudo-label"),
    ("w_t", "pseudo weight"),
    ("x_mix", "mixed"),
    ("y_mix", "mixed label"),
    ("x_masked", "masked"),
    ("pred", "student prediction"),
)


def _is_wandb(logger: Any) -> bool:
    return type(logger).__name__ == "WandbLogger"


def render_panel(
    tensors: dict[str, torch.Tensor],
    *,
    class_names: Sequence[str],
    max_images: int = 2,
    alpha: float = 0.5,
    tile_height: int | None = None,
    with_legend: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Draw the panel (HxWx3 uint8) from the step's CPU tensors; returns (image, titles of the columns).

    Keys (all optional but `x_s`): images `x_s`, `x_t`, `x_mix`, `x_masked` (B,3,H,W) normalised; labels
    `y_s`, `y_t`, `y_t_hat`, `y_mix`, `pred` (B,H,W) train ids; weights `w_t` (B,H,W) in [0, 1].
    Labels are overlaid on their own image: `y_s` on `x_s`, `y_t` / `y_t_hat` / `pred` on `x_t`, `y_mix`
    on `x_mix` (on `x_s` when the image is missing). `tile_height` rescales every tile to that many rows
    (None: the crop size).
    """
    n = len(class_names)
    pal = palette_for(n, class_names)
    base_of = {"y_s": "x_s", "y_t": "x_t", "y_t_hat": "x_t", "pred": "x_t", "y_mix": "x_mix"}
    keys = [(k, title) for k, title in COLUMNS if k in tensors]
    if not keys:
        raise ValueError("no panel tensors to draw")
    b = min(int(next(iter(tensors.values())).shape[0]), max(1, int(max_images)))
    rows = []
    for i in range(b):
        images = {k: denormalize(v[i].float().numpy()) for k, v in tensors.items() if k.startswith("x_")}
        row = []
        for k, _ in keys:
            v = tensors[k][i]
            v = v[0] if v.dim() == 3 and v.shape[0] == 1 else v
            if k.startswith("x_"):
                row.append(images[k])
            elif k == "w_t":
                row.append(heatmap(v.float().numpy()))
            else:
                lab = v.long().numpy()
                base = images.get(base_of[k]) if base_of[k] in images else images.get("x_s")
                if base is not None and base.shape[:2] == lab.shape:
                    row.append(overlay(base, lab, alpha=alpha, palette=pal))
                else:
                    row.append(colorize(lab, palette=pal))
        if tile_height:
            row = [resize_to_height(t, int(tile_height)) for t in row]
        rows.append(row)
    titles = [t for _, t in keys]
    width = sum(r.shape[1] for r in rows[0]) + 2 * (len(rows[0]) - 1)
    footer = legend(list(class_names), palette=pal, width=max(width, 200)) if with_legend else None
    return grid(rows, titles=titles, footer=footer), titles


class ImagePanels(pl.Callback):
    """Image panels of the UDA training step every `every_n_steps` steps (issue 9, W&B dashboards).

    Args:
        every_n_steps: draw after the steps whose count (global step after the step) is a multiple of it;
            <= 0 disables the callback.
        max_images: samples of the batch drawn (rows of the panel).
        dirpath: folder of the PNG panels when no W&B logger is attached (default
            `<trainer.default_root_dir>/panels`).
        alpha: label opacity of the overlays.
        tile_height: rows of each tile in the panel (None: the crop size); 160 keeps a 10-column panel of
            512 crops about 1700 px wide and makes tiny test crops readable.
        wandb_masks: also log per-image `wandb.Image`s with interactive segmentation masks.
    """

    def __init__(
        self,
        *,
        every_n_steps: int = 500,
        max_images: int = 2,
        dirpath: str | None = None,
        alpha: float = 0.5,
        tile_height: int | None = 160,
        wandb_masks: bool = True,
    ) -> None:
        super().__init__()
        self.every_n_steps = int(every_n_steps)
        self.max_images = int(max_images)
        self.dirpath = dirpath
        self.alpha = float(alpha)
        self.tile_height = None if tile_height is None else int(tile_height)
        self.wandb_masks = bool(wandb_masks)
        self._wandb: list[Any] = []
        self._png_dir: Path | None = None
        self.written: list[Path] = []  # PNG files written (for tests and users)

    # ------------------------------------------------------------------ sinks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        loggers = list(trainer.loggers)
        self._wandb = [lg for lg in loggers if _is_wandb(lg)]
        self._png_dir = None
        if loggers and not self._wandb:
            self._png_dir = Path(self.dirpath or Path(trainer.default_root_dir) / "panels")

    @property
    def enabled(self) -> bool:
        return self.every_n_steps > 0 and (bool(self._wandb) or self._png_dir is not None)

    def due(self, step_after: int) -> bool:
        """True when the step that brings the global step to `step_after` is drawn."""
        return self.enabled and step_after > 0 and step_after % self.every_n_steps == 0

    # ------------------------------------------------------------------ hooks
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        request = trainer.is_global_zero and self.due(trainer.global_step + 1)
        pl_module.panel_request = request
        if request:
            pl_module.panel_tensors = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        if not getattr(pl_module, "panel_request", False):
            return
        pl_module.panel_request = False
        tensors, pl_module.panel_tensors = dict(pl_module.panel_tensors), {}
        try:
            self._draw(trainer, pl_module, batch, tensors)
        except Exception as e:  # noqa: BLE001 - a drawing problem must never stop a training run
            log.warning("image panel at step %d failed: %s: %s", trainer.global_step, type(e).__name__, e)

    # ------------------------------------------------------------------ drawing
    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
              tensors: dict[str, torch.Tensor]) -> None:  # fmt: skip
        k = max(1, self.max_images)
        src = batch.get("source", {}) if isinstance(batch, dict) else {}
        tgt = batch.get("target", {}) if isinstance(batch, dict) else {}
        # What the step did not keep (a method without a teacher keeps only the source) comes from the batch.
        for key, node, name in (
            ("x_s", src, "img"),
            ("y_s", src, "gt"),
            ("x_t", tgt, "img"),
            ("y_t", tgt, "gt"),
        ):
            if key not in tensors and name in node:
                tensors[key] = node[name][:k].detach().cpu()
        tensors = {key: v[:k] for key, v in tensors.items()}
        x_pred = tgt.get("img", src.get("img"))
        if x_pred is not None and hasattr(pl_module, "student"):
            # on the target image (on the source one when the batch has no target; drawn over it then)
            tensors["pred"] = self.predict(pl_module.student, x_pred[:k])
        class_names = list(getattr(pl_module, "class_names", None) or [str(i) for i in range(19)])
        panel, _ = render_panel(
            tensors, class_names=class_names, max_images=k, alpha=self.alpha, tile_height=self.tile_height
        )
        step = trainer.global_step
        if self._png_dir is not None:
            self.written.append(save_png(panel, self._png_dir / f"step{step:06d}.png"))
        for lg in self._wandb:
            self._log_wandb(lg, panel, tensors, class_names, step)

    @staticmethod
    @torch.no_grad()
    def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Argmax of the model's logits at x's size, in eval mode, on the CPU. Every submodule's own mode is
        restored afterwards (a model may keep some parts in eval mode while training, e.g. frozen BN)."""
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            return whole_inference(model, x, out_size=tuple(x.shape[-2:])).argmax(1).cpu()
        finally:
            for m, training in modes:
                m.training = training

    def _log_wandb(self, logger: Any, panel: np.ndarray, tensors: dict[str, torch.Tensor],
                   class_names: list[str], step: int) -> None:  # fmt: skip
        import wandb

        media: dict[str, Any] = {"panels/grid": wandb.Image(panel, caption=f"step {step}")}
        if self.wandb_masks:
            labels = {i: n for i, n in enumerate(class_names)}
            labels[IGNORE_INDEX] = "ignore"

            def image(x_key: str, masks: dict[str, str]) -> list[Any] | None:
                if x_key not in tensors:
                    return None
                out = []
                for i in range(tensors[x_key].shape[0]):
                    m = {
                        name: {
                            "mask_data": tensors[key][i].long().numpy().astype(np.int64),
                            "class_labels": labels,
                        }  # fmt: skip
                        for name, key in masks.items()
                        if key in tensors
                    }
                    out.append(wandb.Image(denormalize(tensors[x_key][i].float().numpy()), masks=m))
                return out

            for key, x_key, masks in (
                ("panels/source", "x_s", {"ground_truth": "y_s"}),
                (
                    "panels/target",
                    "x_t",
                    {"pseudo_label": "y_t_hat", "prediction": "pred", "ground_truth": "y_t"},
                ),
                ("panels/mixed", "x_mix", {"mixed_label": "y_mix"}),
                ("panels/masked", "x_masked", {"pseudo_label": "y_t_hat"}),
            ):
                imgs = image(x_key, masks)
                if imgs:
                    media[key] = imgs
            if "w_t" in tensors:
                media["panels/pseudo_weight"] = [
                    wandb.Image(heatmap(w.float().numpy())) for w in tensors["w_t"]
                ]
        logger.log_metrics(media, step=step)

"""Diagnostic: how much of a checkpoint's student mIoU is its BatchNorm running statistics.

    python scripts/bn_recalibrate.py CKPT [CKPT ...] [--batches 40] [--recipes stored,source,target,...]

The student is evaluated in eval mode, so every BatchNorm layer (on the DAFormer host: the decode head's
ConvModules; MiT itself has LayerNorm only) normalises with the running statistics the last training forwards
left behind, with momentum 0.1: about equal parts source, mixed and — with MIC / CAM — masked images. This
script evaluates each checkpoint's student with its stored statistics and again after re-estimating them
(cumulative average, ``momentum=None``) from ``--batches`` training batches of one recipe, everything else
(weights, data, inference) unchanged:

- ``stored``: the statistics training left (the number `results.json` reports);
- ``source`` / ``target`` / ``source+target``: clean training crops of the source, of the target, or both
  (forwarded separately, as training forwards them).

If two methods' students differ under ``stored`` but agree once re-estimated with one common recipe, the
difference was in the statistics, not in the weights. One line per checkpoint and recipe (mIoU over the
checkpoint's validation set), and with ``--out`` a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.models.bn_stats import running_stat_batchnorms  # noqa: E402
from src.uda.video.module import load_module  # noqa: E402
from src.utils import quiet  # noqa: E402

RECIPES = ("stored", "source", "target", "source+target")


@torch.no_grad()
def recalibrate(module, datamodule, recipe: str, batches: int) -> int:
    """Re-estimate the student's BN running statistics from `batches` training batches; returns the number of
    forwards. Dropout / DropPath stay in eval; only the BN layers run in train mode."""
    student = module.student
    bns = running_stat_batchnorms(student)
    if not bns:
        raise SystemExit("the student has no BatchNorm layer with running statistics: nothing to re-estimate")
    student.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the forwards below
        m.train()
    parts = {"source": ("source",), "target": ("target",), "source+target": ("source", "target")}[recipe]
    n = 0
    for i, batch in enumerate(datamodule.train_dataloader()):
        if i >= batches:
            break
        batch = datamodule.on_after_batch_transfer(batch, 0)  # uint8 -> normalised float, as in training
        for part in parts:
            student(module._prep(batch[part]["img"]))
            n += 1
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
        m.eval()
    return n


def validate(module, datamodule) -> float:
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_model_summary=False,
                         enable_progress_bar=False)  # fmt: skip
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return float(module.last_summary["mIoU"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpts", nargs="+", type=Path)
    ap.add_argument("--batches", type=int, default=40, help="training batches per re-estimate (default 40)")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    ap.add_argument("--out", type=Path, default=None, help="also write a markdown table here")
    args = ap.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    bad = [r for r in recipes if r not in RECIPES]
    if bad:
        raise SystemExit(f"--recipes: unknown {bad}; choose from {', '.join(RECIPES)}")
    for p in args.ckpts:
        if not p.is_file():
            raise SystemExit(f"{p}: no such checkpoint; pass a run's checkpoints/step*.ckpt or last.ckpt")
    quiet.install()
    rows = []
    for p in args.ckpts:
        module = load_module(p)
        module.eval_cfg["teacher"] = False  # the student only
        cfg = OmegaConf.create(module.cfg)
        name, seed = cfg.uda.get("name", "?"), cfg.get("seed", "?")
        datamodule = instantiate(cfg.data, rcs=None, seed=0)
        datamodule.setup("fit")
        stored = {k: v.clone() for k, v in module.student.state_dict().items()}
        row = {"ckpt": str(p), "method": name, "seed": seed}
        for recipe in recipes:
            module.student.load_state_dict(stored)
            if recipe != "stored":
                recalibrate(module, datamodule, recipe, args.batches)
            row[recipe] = validate(module, datamodule)
            print(f"{p}  {name} seed {seed}  {recipe}: {row[recipe]:.2f}", flush=True)
        rows.append(row)
    if args.out is not None:
        cmd = f"python scripts/bn_recalibrate.py --batches {args.batches}"
        head = f"BN statistics re-estimated from {args.batches} training batches (`{cmd}`); student mIoU (%)"
        lines = [f"{head} on the checkpoint's validation set.", ""]
        lines.append("| method | seed | " + " | ".join(recipes) + " |")
        lines.append("|---|---|" + "---|" * len(recipes))
        for r in rows:
            cells = " | ".join(f"{r[k]:.2f}" for k in recipes)
            lines.append(f"| {r['method']} | {r['seed']} | {cells} |")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

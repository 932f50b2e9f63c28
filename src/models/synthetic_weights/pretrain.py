"""The offline ImageNet stand-in: a MiT encoder pre-trained on the procedural pretext task (our design).

The papers fine-tune an ImageNet-1k pre-trained encoder (daformer_mic.md §4.1); their regime (source-only far
below the oracle, self-training closing most of the gap, a meaningful frozen encoder for the feature
distance) needs one. Tests and the embedded benchmark run offline, so :func:`ensure_synthetic_weights`
pre-trains the encoder once on :mod:`src.models.synthetic_weights.pretext` (dense classification of
procedural shapes and textures, never the benchmark's scenes or labels), caches it under
``<cache_dir>/synthetic_<mit_bX>.pth`` in the key layout of SegFormer's ``mit_bX.pth`` (loaded by the same
:func:`src.models.pretrained.load_backbone_weights` as real weights) with a JSON manifest beside it, and
returns the path. ``model.pretrained=synthetic`` names it.

It is **not** ImageNet: its features know shapes, textures, colours and edges, not object categories; use it
for the embedded benchmark and offline experiments, never in place of the real weights for real data.

Training: AdamW (lr 1e-3, weight decay 0.05, 5 % linear warm-up then cosine), 600 batches of 64 images of
64² (about 3.6 min on 2 CPU cores; a 1500-step version measured 2.5-6 mIoU better oracles than training from
scratch on a dev split, 600 steps is what `make train`'s 10 minutes allow), a throw-away SegFormer-style
dense head (per stage a 1x1 conv to 64 channels, upsampled to stride 4, summed, GELU, a 1x1 classifier for
the 11 shape and 8 texture classes), cross-entropy on both label maps. Seeded:
batch ``i`` is :func:`render_batch(seed, i) <src.models.synthetic_weights.pretext.render_batch>` and the
weights are initialised from ``torch.manual_seed(seed)``, so the same (seed, steps, threads) give the same
file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.backbones import mix_transformer
from src.models.synthetic_weights.pretext import SHAPES, TEXTURES, render_batch

__all__ = ["PRETEXT_VERSION", "DEFAULTS", "default_cache_dir", "ensure_synthetic_weights", "pretrain"]

log = logging.getLogger(__name__)

#: Bump when the pretext or the training changes: cached weights of another version are re-made.
PRETEXT_VERSION = 1
#: Settings of the cached weights (the manifest records them; another value re-makes the file).
DEFAULTS: dict = {"steps": 600, "batch_size": 64, "size": 64, "lr": 1e-3, "weight_decay": 0.05, "seed": 0}

# ImageNet normalisation of the segmentors' inputs (src/data/transforms.py), applied to the pretext images.
_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1) / 255.0
_STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1) / 255.0


def default_cache_dir() -> Path:
    """``$DATA_ROOT/pretrained``, or ``<repo>/data/pretrained`` (beside the synthetic data, like
    ``paths.data_dir``)."""
    root = os.environ.get("DATA_ROOT") or str(Path(__file__).resolve().parents[3] / "data")
    return Path(root) / "pretrained"


class _DenseHead(nn.Module):
    """Throw-away pretext head: SegFormer-style all-MLP fusion of the 4 stages, two dense classifiers."""

    def __init__(self, in_channels: list[int], width: int = 64) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.cls = nn.Conv2d(width, len(SHAPES) + 1 + len(TEXTURES), 1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        x = sum(F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) if i else p(f)
                for i, (p, f) in enumerate(zip(self.proj, feats)))  # fmt: skip
        return self.cls(F.gelu(x))


class _PretextBatches(torch.utils.data.Dataset):
    """Batch ``i`` of the pretext stream as tensors (rendered in a DataLoader worker)."""

    def __init__(self, seed: int, steps: int, batch_size: int, size: int) -> None:
        self.seed, self.steps, self.batch_size, self.size = seed, steps, batch_size, size

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int):
        return tuple(torch.from_numpy(a) for a in render_batch(self.seed, i, self.batch_size, self.size))


def _lr_factor(step: int, steps: int) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def _losses(encoder: nn.Module, head: nn.Module, x: Tensor, y_shape: Tensor, y_tex: Tensor):
    logits = F.interpolate(head(encoder((x - _MEAN) / _STD)), size=x.shape[-2:], mode="bilinear",
                           align_corners=False)  # fmt: skip
    ns = len(SHAPES) + 1
    return F.cross_entropy(logits[:, :ns], y_shape), F.cross_entropy(logits[:, ns:], y_tex), logits


@torch.no_grad()
def _shape_miou(encoder: nn.Module, head: nn.Module, seed: int, size: int) -> float:
    """mIoU (%) of the shape task on 4 held-out batches (indices far beyond any training batch)."""
    encoder.eval()
    head.eval()
    ns = len(SHAPES) + 1
    inter, union = np.zeros(ns), np.zeros(ns)
    for i in range(4):
        x, ys, yt = (torch.from_numpy(a) for a in render_batch(seed, 10**9 + i, 64, size))
        pred = _losses(encoder, head, x, ys, yt)[2][:, :ns].argmax(1)
        for c in range(ns):
            p, t = pred == c, ys == c
            inter[c] += (p & t).sum().item()
            union[c] += (p | t).sum().item()
    encoder.train()
    head.train()
    return float(100 * np.mean(inter / np.maximum(union, 1)))


def pretrain(
    backbone: str = "mit_b0",
    *,
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    size: int = DEFAULTS["size"],
    lr: float = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    seed: int = DEFAULTS["seed"],
    progress: bool = True,
) -> tuple[dict[str, Tensor], dict]:
    """Pre-train a MiT encoder on the pretext task; returns (encoder state dict, training record)."""
    if backbone not in mix_transformer.MIT_CONFIGS:
        raise ValueError(
            f"the synthetic stand-in exists for MiT encoders ({sorted(mix_transformer.MIT_CONFIGS)}), "
            f"not '{backbone}'; pass real weights in model.pretrained or null"
        )
    torch.manual_seed(seed)
    encoder = getattr(mix_transformer, backbone)(drop_path_rate=0.0)
    head = _DenseHead(list(encoder.out_channels))
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"pre-training the synthetic stand-in of {backbone} (once)", unit="step",
                   mininterval=2.0)  # fmt: skip
    t0, curve = time.time(), []
    # Batches are rendered one step ahead in a worker process (render_batch is a function of the step alone,
    # so the stream is the same with and without it).
    batches = torch.utils.data.DataLoader(
        _PretextBatches(seed, steps, batch_size, size), batch_size=None, num_workers=1, prefetch_factor=2
    )
    for step, (x, ys, yt) in enumerate(batches):
        loss_s, loss_t, _ = _losses(encoder, head, x, ys, yt)
        loss = loss_s + loss_t
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            curve.append([step, round(loss_s.item(), 4), round(loss_t.item(), 4)])
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(shape=f"{loss_s.item():.3f}", texture=f"{loss_t.item():.3f}", refresh=False)
    if bar is not None:
        bar.close()
    record = {
        "generator": __name__, "version": PRETEXT_VERSION, "backbone": backbone,
        "params": {"steps": steps, "batch_size": batch_size, "size": size, "lr": lr,
                   "weight_decay": weight_decay, "seed": seed},
        "threads": torch.get_num_threads(), "seconds": round(time.time() - t0, 1), "loss_curve": curve,
        "heldout_shape_mIoU": round(_shape_miou(encoder, head, seed, size), 2),
    }  # fmt: skip
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}, record


def _manifest_ok(manifest: Path, backbone: str, params: dict) -> bool:
    try:
        m = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return m.get("version") == PRETEXT_VERSION and m.get("backbone") == backbone and m.get("params") == params


def ensure_synthetic_weights(backbone: str = "mit_b0", cache_dir: str | os.PathLike[str] | None = None,
                             **overrides) -> Path:  # fmt: skip
    """The cached stand-in weights of ``backbone`` (pre-trained now if missing or of other settings).

    Atomic (written to a temporary file, then renamed) and locked, so parallel runs wait for one
    pre-training instead of each running their own.
    """
    params = {**DEFAULTS, **overrides}
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path, manifest = cache / f"synthetic_{backbone}.pth", cache / f"synthetic_{backbone}.json"
    if path.is_file() and _manifest_ok(manifest, backbone, params):
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".synthetic_{backbone}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be pre-training it: wait, then re-check
        if path.is_file() and _manifest_ok(manifest, backbone, params):
            return path
        log.info("Pre-training the synthetic ImageNet stand-in for %s into %s (once)", backbone, path)
        state, record = pretrain(backbone, **params)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, path)
        manifest.write_text(json.dumps(record, indent=1))
        log.info("Synthetic stand-in written: %s (%.0f s, held-out shape mIoU %.1f)", path, record["seconds"],
                 record["heldout_shape_mIoU"])  # fmt: skip
    return path

#!/usr/bin/env python
"""Measure one UDA training step, stage by stage, and the data-loading throughput.

    python scripts/benchmark.py --experiment mic_synthetic                 # CPU, synthetic crops
    python scripts/benchmark.py --experiment mic_synthetic --device cuda --precision bf16-mixed \
        --override model=daformer_mitb5 model.head_channels=null --crop 512

Prints the mean time of each stage of the training step (`UDAModule.training_step`, or the video module's
for a video experiment such as udass_synthetic_video / udass_viper, with random clips and flows: EMA update,
source forward/backward, teacher forward, pseudo-labels, mixing, masking, each student forward/backward,
optimizer), steps per second, the share of strategy work that is not a network pass, data-loader samples per
second per worker, and the peak memory (CUDA: max allocated; CPU: peak resident set size of the process,
and its rise above the RSS once the model was built, to compare e.g. `model.checkpoint_encoder=true` in
two runs).
`--json FILE` writes the same numbers for the README's performance table.

Also measured (skip with `--no-data` / `--no-slide`; `--no-step` skips the step):
- the data pipeline's rate (files -> crops, augmentation, rare-class sampling, collation) against plain
  decoding of the same files (source image + label + target image per sample, cv2, one process, per CPU
  second; see `bench_data`): the issue's goal is >= 80 %. Batches leave the pipeline as uint8; their
  normalisation on the device (`UDADataModule.on_after_batch_transfer`) is timed separately;
- with `--streaming-dir DIR` (written by scripts/pack_dataset.py for the same data), the same pipeline
  reading LitData chunks instead of the files (`data.streaming=true`), against the files;
- sliding-window inference, all windows of an image in one forward (`batched=True`, HRDA/MIC) against a
  loop over windows (`batched=False`), on full validation-size images.
Any `train.*` switch is an override: `--override train.backward=sum train.channels_last=true`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import src.utils.config  # noqa: E402,F401
from src.data.transforms import collate  # noqa: E402
from src.uda.video.module import build_module  # noqa: E402

# Stages that are strategy work, not network passes (issue: they must stay under 5 % of a step).
STRATEGY_STAGES = ("ema_update", "pseudo_label", "mix", "mask")


class _FixedBatches(Dataset):
    """The same random batch over and over: times the step, not the data pipeline."""

    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.batch


class _StepClock(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t0 = warmup, [], 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            module.timer.reset()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._t0)


def compose_cfg(experiment: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        base = [f"experiment={experiment}", "paths.output_dir=/tmp/benchmark"]
        return compose("train", overrides=[*base, *overrides])


def random_batch(cfg, crop: int, batch_size: int) -> dict:
    """One training item of random normalised crops: image crops, or for a video data config (``data.video``)
    clips with the batch contract of src/data/video_datamodule.py (frames, labels, flows of a few px)."""
    g = torch.Generator().manual_seed(0)
    c = int(cfg.data.num_classes)
    if cfg.data.get("video", False):
        return random_clip_batch(g, c, crop)

    def domain():
        return {
            "img": torch.randn(3, crop, crop, generator=g),
            "gt": torch.randint(0, c, (crop, crop), generator=g),
            "valid": torch.ones(crop, crop, dtype=torch.uint8),
        }

    return {"source": domain(), "target": domain()}


def random_clip_batch(g: torch.Generator, num_classes: int, crop: int) -> dict:
    def img():
        return torch.randn(3, crop, crop, generator=g)

    def lab():
        return torch.randint(0, num_classes, (crop, crop), generator=g)

    def flow():
        return 2.0 * torch.randn(2, crop, crop, generator=g)

    source = {"img": img(), "img_prev": img(), "gt": lab(), "gt_prev": lab(), "flow": flow()}
    target = {"img": img(), "img_prev": img(), "img_k": img(), "img_k_prev": img(), "flow": flow(),
              "flow_k": flow(), "flow_k_prev": flow(), "flow_kk": flow(),
              "valid": torch.ones(crop, crop, dtype=torch.uint8)}  # fmt: skip
    return {"source": source, "target": target}


def bench_step(cfg, args) -> dict:
    module = build_module(OmegaConf.to_container(cfg, resolve=True))
    module.timer.enabled = True
    data = DataLoader(_FixedBatches(random_batch(cfg, args.crop, 1), args.batch * (args.warmup + args.steps)),
                      batch_size=args.batch)  # fmt: skip
    clock = _StepClock(args.warmup)
    trainer = pl.Trainer(
        accelerator=args.device,
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_start = _rss_gb()
    trainer.fit(module, train_dataloaders=data)
    step = sum(clock.times) / len(clock.times)
    stages = {k: v / module.timer.counts[k] for k, v in module.timer.totals.items()}
    strategy = sum(stages.get(k, 0.0) for k in STRATEGY_STAGES)
    out = {
        "step_s": step,
        "steps_per_s": 1.0 / step,
        "stages_s": stages,
        "strategy_s": strategy,
        "strategy_share": strategy / step,
    }
    if args.device == "cuda":
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        # the training's own peak: the process's peak RSS above its RSS once the model was built (compare
        # settings such as model.checkpoint_encoder in separate processes: the peak is a high-water mark)
        out["peak_rss_above_start_gb"] = max(0.0, out["peak_rss_gb"] - rss_start)
    return out


def _rss_gb() -> float:
    """The current resident set size of this process (Linux /proc; else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**30
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_data(cfg, args) -> dict:
    """Samples per second of the training data pipeline against plain decoding of the same files.

    The headline ratio: the training stream is cut into `--data-rounds` rounds of batches; a first pass
    records which files each round reads (and warms the page cache); then each round runs the pipeline in
    the main process (workers=0; item i of the stream is a pure function of i, so it reads the same files
    again) and plain decoding of those files (cv2: source image + label, target image), in alternating
    order (whichever runs second finds the files in the CPU caches). Rates are per CPU second of the process
    (`time.process_time`: what one worker with a core of its own delivers, robust to other jobs on the
    machine) and per wall-clock second. Loaders with workers > 0 are timed in one stretch (their workers
    prefetch)."""
    from src.train import build_datamodule

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    dm.source, dm.target = _Recorder(dm.source), _Recorder(dm.target) if dm.target is not None else None
    decode = _PlainDecode(dm)
    per_round = max(args.data_batches // args.data_rounds, 1)
    bounds = [
        (r * per_round * dm.batch_size, (r + 1) * per_round * dm.batch_size) for r in range(args.data_rounds)
    ]
    files = []
    for lo, hi in bounds:  # which files each round reads
        decode.clear()
        for _ in DataLoader(
            dm.train_dataset(), batch_size=dm.batch_size, sampler=range(lo, hi), collate_fn=collate
        ):
            pass
        files.append(decode.recorded())
    dm.source, dm.target = dm.source.dataset, dm.target.dataset if dm.target is not None else None
    cpu = {"pipe": 0.0, "dec": 0.0}
    wall = {"pipe": 0.0, "dec": 0.0}
    n = 0
    for r, (lo, hi) in enumerate(bounds):
        it = iter(DataLoader(dm.train_dataset(), batch_size=dm.batch_size, sampler=range(lo, hi),
                             collate_fn=collate))  # fmt: skip
        for side in ("pipe", "dec") if r % 2 == 0 else ("dec", "pipe"):
            c0, w0 = time.process_time(), time.perf_counter()
            if side == "pipe":
                for batch in it:
                    n += batch["source"]["img"].shape[0]
            else:
                decode(*files[r])
            cpu[side] += time.process_time() - c0
            wall[side] += time.perf_counter() - w0
    out = {
        "plain_decode": {"samples_per_s": n / wall["dec"], "samples_per_cpu_s": n / cpu["dec"]},
        "workers=0": {"samples_per_s": n / wall["pipe"], "samples_per_s_per_worker": n / wall["pipe"],
                      "samples_per_cpu_s": n / cpu["pipe"]},
        "pipeline_vs_decode": cpu["dec"] / cpu["pipe"],  # per CPU second
        "pipeline_vs_decode_wall": wall["dec"] / wall["pipe"],
    }  # fmt: skip
    for workers in args.workers:
        if workers > 0:
            out[f"workers={workers}"] = bench_loader(dm, args, workers)
    # the device side of the uint8 batches: float conversion + ImageNet normalisation of one batch
    batch = next(iter(DataLoader(dm.train_dataset(), batch_size=dm.batch_size, sampler=range(1),
                                 collate_fn=collate)))  # fmt: skip
    batch = {d: {k: v.to(args.device) for k, v in b.items()} for d, b in batch.items()}
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        dm.on_after_batch_transfer(batch, 0)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out["device_normalize_ms_per_batch"] = 1e3 * sorted(times)[len(times) // 2]
    if args.streaming_dir is not None:  # the same stream from LitData chunks, interleaved with the files
        stream = ["data.streaming=true", f"data.streaming_dir={args.streaming_dir}"]
        scfg = compose_cfg(args.experiment, [f"trainer.max_steps={args.warmup + args.steps}", *args.override,
                                             *stream])  # fmt: skip
        sdm = build_datamodule(scfg)
        sdm.setup("fit")
        its = {"files": _loader(dm, 0), "chunks": _loader(sdm, 0)}
        t = dict.fromkeys(its, 0.0)
        for _ in range(args.data_rounds):
            for k, i in its.items():
                t0 = time.process_time()
                for _ in range(per_round):
                    next(i)
                t[k] += time.process_time() - t0
        rate = args.data_rounds * per_round * dm.batch_size / t["chunks"]
        out["streaming"] = {"workers=0": {"samples_per_cpu_s": rate}}
        for workers in args.workers:
            if workers > 0:
                out["streaming"][f"workers={workers}"] = bench_loader(sdm, args, workers)
        out["streaming_vs_files"] = t["files"] / t["chunks"]
    return out


class _Recorder:
    """A dataset that records the indices `load` reads (for decoding the same files); all else delegated."""

    def __init__(self, dataset) -> None:
        self.dataset, self.loaded = dataset, []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        return getattr(self.dataset, name)

    def load(self, i: int):
        self.loaded.append(i)
        return self.dataset.load(i)


def _loader(dm, workers: int):
    """An iterator over the data module's training stream (first batch, the start-up, already drawn)."""
    it = iter(DataLoader(dm.train_dataset(), batch_size=dm.batch_size, num_workers=workers,
                         collate_fn=collate, sampler=range(10**9), drop_last=True))  # fmt: skip
    next(it)
    return it


def bench_loader(dm, args, workers: int) -> dict:
    """Training samples per second of the data module's training stream through a DataLoader."""
    it = _loader(dm, workers)
    t0, n = time.perf_counter(), 0
    for _ in range(args.data_batches):
        n += next(it)["source"]["img"].shape[0]
    dt = time.perf_counter() - t0
    del it
    return {"samples_per_s": n / dt, "samples_per_s_per_worker": n / dt / max(workers, 1)}


class _PlainDecode:
    """Plain decoding (cv2) of the files a recorded pipeline round read: source image + label, target
    image."""

    def __init__(self, dm) -> None:
        self.src, self.tgt = dm.source, dm.target

    def clear(self) -> None:
        for d in (self.src, self.tgt):
            if d is not None:
                d.loaded.clear()

    def recorded(self) -> tuple[list[tuple], list]:
        """The source (image, label) paths and target image paths read since `clear`."""
        src = [self.src.items[i] for i in self.src.loaded]
        tgt = [self.tgt.items[i][0] for i in self.tgt.loaded] if self.tgt is not None else []
        return src, tgt

    def __call__(self, src: list[tuple], tgt: list) -> None:
        import cv2

        for img, lab in src:
            cv2.imread(str(img), cv2.IMREAD_COLOR)
            cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
        for img in tgt:
            cv2.imread(str(img), cv2.IMREAD_COLOR)


def bench_slide(cfg, args) -> dict:
    """Sliding-window inference of the student on validation-size images: batched vs per-window loop."""
    from src.models.inference import slide_inference, slide_windows

    module = build_module(OmegaConf.to_container(cfg, resolve=True)).to(args.device).eval()
    h, w = args.slide_image
    crop, stride = (args.slide_crop, args.slide_crop), (args.slide_stride, args.slide_stride)
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(args.device)
    out = {"image": [h, w], "crop": list(crop), "stride": list(stride),
           "windows": len(slide_windows(h, w, crop_size=crop, stride=stride))}  # fmt: skip
    dtype = torch.bfloat16 if args.precision.startswith("bf16") else torch.float16
    amp = torch.autocast(args.device, dtype=dtype, enabled=args.precision.endswith("mixed"))
    for batched in (True, False):
        times = []
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad(), amp:
            for i in range(args.slide_reps + 1):
                if args.device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                slide_inference(module.student, x, num_classes=module.num_classes, crop_size=crop,
                                stride=stride, batched=batched)  # fmt: skip
                if args.device == "cuda":
                    torch.cuda.synchronize()
                if i:  # the first call warms up
                    times.append(time.perf_counter() - t0)
        key = "batched" if batched else "per_window"
        out[key] = {"ms_per_image": 1e3 * sum(times) / len(times)}
        if args.device == "cuda":
            out[key]["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    out["speedup_batched"] = out["per_window"]["ms_per_image"] / out["batched"]["ms_per_image"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="mic_synthetic")
    p.add_argument("--override", nargs="*", default=[], help="Hydra overrides, e.g. model=daformer_mitb5")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=2, help="crops per domain")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="32-true")
    p.add_argument("--workers", type=int, nargs="*", default=[0, 1], help="data-loader worker counts to time")
    p.add_argument("--data-batches", type=int, default=200)
    p.add_argument("--data-rounds", type=int, default=10, help="alternations of pipeline and plain decoding")
    p.add_argument("--no-data", action="store_true", help="skip the data-loading measurement")
    p.add_argument("--no-slide", action="store_true", help="skip the sliding-window measurement")
    p.add_argument("--no-step", action="store_true", help="skip the training-step measurement")
    p.add_argument(
        "--streaming-dir",
        default=None,
        help="also time the pipeline on these LitData chunks (scripts/pack_dataset.py)",
    )
    p.add_argument("--slide-image", type=int, nargs=2, default=[128, 256], help="image (h, w)")
    p.add_argument("--slide-crop", type=int, default=64, help="window size")
    p.add_argument("--slide-stride", type=int, default=32, help="window stride")
    p.add_argument("--slide-reps", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    cfg = compose_cfg(args.experiment, [f"trainer.max_steps={args.warmup + args.steps}", *args.override])
    torch.manual_seed(0)
    res = {
        "experiment": args.experiment,
        "overrides": args.override,
        "model": cfg.model.name,
        "crop": args.crop,
        "batch_per_domain": args.batch,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "precision": args.precision,
    }
    if not args.no_step:
        res["step"] = bench_step(cfg, args)
    if not args.no_data:
        if cfg.data.get("video", False):
            raise SystemExit(
                f"--experiment {args.experiment} reads video clips: the data-rate measurement covers image "
                f"datasets only; add --no-data (the step and the sliding-window timings work on clips)"
            )
        res["data"] = bench_data(cfg, args)
    if not args.no_slide:
        res["slide"] = bench_slide(cfg, args)

    print(f"\n{args.experiment} | {cfg.model.name} | crop {args.crop} | batch {args.batch}+{args.batch} | "
          f"{res['device']} ({res['threads']} threads) | {args.precision}")  # fmt: skip
    if "step" in res:
        s = res["step"]
        print(f"{'stage':<18}{'ms':>10}{'% step':>9}")
        for k, v in s["stages_s"].items():
            print(f"{k:<18}{v * 1e3:>10.1f}{100 * v / s['step_s']:>8.1f}%")
        print(f"{'step (total)':<18}{s['step_s'] * 1e3:>10.1f}   {s['steps_per_s']:.2f} steps/s")
        print(f"strategy work other than network passes: {100 * s['strategy_share']:.2f} % of the step")
        if "peak_memory_gb" in s:
            print(f"peak memory: {s['peak_memory_gb']:.2f} GB (CUDA max allocated)")
        else:
            above = s["peak_rss_above_start_gb"]
            print(f"peak memory: {s['peak_rss_gb']:.2f} GB (process RSS), {above:.2f} GB above the RSS once "
                  f"the model was built")  # fmt: skip
    data = res.get("data", {})
    for origin, rates in (("files", data), ("chunks", data.get("streaming", {}))):
        for k, v in rates.items():
            if not k.startswith("workers="):
                continue
            if "samples_per_cpu_s" in v:
                print(f"data loading ({origin}) {k}: {v['samples_per_cpu_s']:.1f} samples per CPU second")
            if "samples_per_s" in v:
                print(f"data loading ({origin}) {k}: {v['samples_per_s']:.1f} samples/s "
                      f"({v['samples_per_s_per_worker']:.1f} per worker)")  # fmt: skip
    if data:
        dec = data["plain_decode"]
        print(f"plain decoding of the same files: {dec['samples_per_cpu_s']:.1f} samples per CPU second "
              f"({dec['samples_per_s']:.1f}/s); pipeline = {100 * data['pipeline_vs_decode']:.0f} % of it "
              f"per CPU second ({100 * data['pipeline_vs_decode_wall']:.0f} % per wall second)")  # fmt: skip
        norm = data["device_normalize_ms_per_batch"]
        print(f"device-side normalisation: {norm:.2f} ms a batch ({args.device})")
    if "streaming_vs_files" in data:
        share = 100 * data["streaming_vs_files"]
        print(f"streaming from LitData chunks: {share:.0f} % of the file pipeline's rate")
    if "slide" in res:
        sl = res["slide"]
        print(f"sliding window {sl['image'][0]}x{sl['image'][1]}, crop {sl['crop'][0]}, stride "
              f"{sl['stride'][0]} ({sl['windows']} windows): batched {sl['batched']['ms_per_image']:.1f} ms, "
              f"per-window {sl['per_window']['ms_per_image']:.1f} ms per image "
              f"(batched {sl['speedup_batched']:.2f}x)")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Compute every optical flow a video dataset split needs with OpenCV DIS, in the published format and names.

The published flows (SDCNet/FlowNet2, video_uda.md §2.1) need CUDA ops and weights; DIS needs nothing
(video_uda.md §6). This writes the same files, ``int16(flow × 10)`` ``.npy`` backward flows t -> s in each
dataset's naming (§2.2; the naming lives in the dataset classes), flat in ``--out``::

    python scripts/compute_flow.py cityscapes_seq $DATA_ROOT/cityscapes --split train --role target \\
        --out $DATA_ROOT/estimated_optical_flow_cityscapes_seq_train            # 19->18, 19->17, 18->17
    python scripts/compute_flow.py cityscapes_seq $DATA_ROOT/cityscapes --split val \\
        --out $DATA_ROOT/estimated_optical_flow_cityscapes_seq_val              # 19->18 (t -> t-1)
    python scripts/compute_flow.py viper_seq $DATA_ROOT/viper \\
        --out $DATA_ROOT/estimated_optical_flow_viper_train
    python scripts/compute_flow.py synthia_seq $DATA_ROOT/SYNTHIA-SEQS-04-DAWN \\
        --out $DATA_ROOT/estimated_optical_flow_synthiaseq_train
    python scripts/compute_flow.py clip_folder my_clips/target --role target --interval 1

Which flows (video_uda.md §1.2): ``--role source`` and ``val``: t -> t−1; ``target``: t -> t−1, t -> t−Δ,
t−Δ -> t−Δ−1, t -> t−Δ−1 for ``--interval`` Δ. Default role: ``target`` for Cityscapes-Seq train, ``val`` for
its val split, ``source`` otherwise. ``--scale`` resizes the frames before DIS and the flow is stored at that
resolution, as published (default per dataset: Cityscapes 0.5 -> 1024x512, VIPER 0.533333 -> 1024x576,
SYNTHIA-Seq 0.533333 of the cut 1280x640 frames -> 683x341, clip folders 1.0); the data pipeline resizes any
resolution to the frames. Existing files are kept (``--overwrite`` recomputes them). The run ends with the
measured seconds per frame pair (decode + DIS + write in a worker, and wall-clock throughput).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.flow import DIS_PRESETS, compute_dis_flow, write_flow  # noqa: E402

DATASETS = ("cityscapes_seq", "viper_seq", "synthia_seq", "clip_folder")
DEFAULT_SCALE = {"cityscapes_seq": 0.5, "viper_seq": 0.533333, "synthia_seq": 0.533333, "clip_folder": 1.0}


def flow_pairs(role: str, interval: int) -> list[tuple[int, int]]:
    """Offset pairs (a, b) = flow t−a -> t−b a split of this role needs (video_uda.md §1.2)."""
    if role in ("source", "val"):
        return [(0, 1)]
    d = int(interval)
    if d < 1:
        raise ValueError(f"--interval must be >= 1, got {interval}")
    return list(dict.fromkeys([(0, 1), (0, d), (d, d + 1), (0, d + 1)]))


def open_dataset(name: str, root: Path, *, split: str, out: Path, list_file: str | None):
    """The dataset object (unlabelled: only frames are read) whose naming and frame reading the flows use."""
    if name == "cityscapes_seq":
        from src.data.datasets.cityscapes_seq import CityscapesSeqDataset

        return CityscapesSeqDataset(root, split=split, labels=False, flow_dir=out, list_file=list_file)
    if name == "viper_seq":
        from src.data.datasets.viper_seq import ViperSeqDataset

        return ViperSeqDataset(root, split=split, labels=False, flow_dir=out, list_file=list_file)
    if name == "synthia_seq":
        from src.data.datasets.synthia_seq import SynthiaSeqDataset

        return SynthiaSeqDataset(root, labels=False, flow_dir=out, list_file=list_file)
    from src.data.datasets.clip_folder import ClipFolderDataset

    return ClipFolderDataset(root, labels=False, flow_dir=out, key="ROOT")


_DATASET: Any = None
_OPTS: dict[str, Any] = {}


def _init(dataset: Any, opts: dict[str, Any]) -> None:
    import cv2

    global _DATASET, _OPTS
    cv2.setNumThreads(1)
    _DATASET, _OPTS = dataset, opts


def _one(job: tuple[int, int, int, str]) -> tuple[str, float, float]:
    """Read frames t−a and t−b of clip i, compute the flow t−a -> t−b, write it; returns (path, wall seconds,
    CPU seconds)."""
    i, a, b, out = job
    t0, c0 = time.perf_counter(), time.process_time()
    frame_a = _DATASET.read_frame(_DATASET.frame_path(i, a))
    frame_b = _DATASET.read_frame(_DATASET.frame_path(i, b))
    flow = compute_dis_flow(frame_a, frame_b, _OPTS["preset"], _OPTS["scale"])
    write_flow(out, flow)
    return out, time.perf_counter() - t0, time.process_time() - c0


def compute_flows(
    name: str,
    root: Path,
    *,
    out: Path | None = None,
    split: str = "train",
    role: str | None = None,
    interval: int = 1,
    scale: float | None = None,
    preset: str = "medium",
    workers: int = 1,
    overwrite: bool = False,
    list_file: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the flows of one split; returns counts and timings (see the module docstring)."""
    from tqdm import tqdm

    if role is None:
        role = ("target" if split == "train" else "val") if name == "cityscapes_seq" else "source"
    scale = DEFAULT_SCALE[name] if scale is None else float(scale)
    out = Path(out) if out is not None else Path(root) / "flows"
    dataset = open_dataset(name, Path(root), split=split, out=out, list_file=list_file)
    pairs = flow_pairs(role, interval)
    offsets = sorted({k for p in pairs for k in p})
    dataset.verify(offsets)  # every frame exists (one readable error otherwise)
    jobs, seen, kept = [], set(), 0
    for i in range(len(dataset)):
        for a, b in pairs:
            path = str(dataset.flow_path(i, a, b))
            if path in seen:  # the same flow of two pairs (e.g. Δ = 1: t -> t−Δ is t -> t−1)
                continue
            seen.add(path)
            if not overwrite and Path(path).is_file():
                kept += 1
                continue
            jobs.append((i, a, b, path))
    out.mkdir(parents=True, exist_ok=True)
    opts = {"preset": preset, "scale": scale}
    t0 = time.perf_counter()
    bar = dict(total=len(jobs), desc=f"{name} flows", unit="pair", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(
            min(workers, len(jobs)), initializer=_init, initargs=(dataset, opts)
        ) as pool:
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            done = list(tqdm(pool.imap_unordered(_one, jobs, chunksize=chunk), **bar))
    else:
        _init(dataset, opts)
        done = [_one(j) for j in tqdm(jobs, **bar)]
    wall = time.perf_counter() - t0
    per_pair = [s for _, s, _ in done]
    cpu = [c for _, _, c in done]
    return {
        "dataset": name,
        "root": str(root),
        "split": split,
        "role": role,
        "pairs": [list(p) for p in pairs],
        "out": str(out),
        "computed": len(done),
        "kept": kept,
        "scale": scale,
        "preset": preset,
        "workers": workers,
        "wall_s": wall,
        "sec_per_pair": sum(per_pair) / len(per_pair) if per_pair else None,
        "cpu_sec_per_pair": sum(cpu) / len(cpu) if cpu else None,
        "wall_sec_per_pair": wall / len(done) if done else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument("root", type=Path, help="dataset root (the release layout), or a clip folder")
    ap.add_argument("--split", default="train", help="train | val (Cityscapes-Seq, VIPER)")
    ap.add_argument(
        "--role", choices=("source", "target", "val"), default=None, help="which flows (docstring)"
    )
    ap.add_argument("--interval", type=int, default=1, help="Δ of the target clips (data.interval)")
    ap.add_argument("--out", type=Path, default=None, help="flow folder (default ROOT/flows)")
    ap.add_argument("--scale", type=float, default=None, help="frame scale before DIS (default per dataset)")
    ap.add_argument("--preset", choices=sorted(DIS_PRESETS), default="medium", help="DIS preset")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="processes")
    ap.add_argument("--overwrite", action="store_true", help="recompute existing files")
    ap.add_argument("--list-file", default=None, help="the forks' list of current frames (optional)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        r = compute_flows(
            args.dataset, args.root, out=args.out, split=args.split, role=args.role, interval=args.interval,
            scale=args.scale, preset=args.preset, workers=args.workers, overwrite=args.overwrite,
            list_file=args.list_file, progress=not args.no_progress,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"{r['dataset']} {r['root']} ({r['role']}: pairs {r['pairs']}): wrote {r['computed']} flow(s) to "
        f"{r['out']}, kept {r['kept']} existing; DIS {r['preset']} at scale {r['scale']}"
    )
    if r["computed"]:
        print(
            f"  {r['sec_per_pair'] * 1000:.1f} ms per frame pair in a worker (decode + DIS + write; "
            f"{r['cpu_sec_per_pair'] * 1000:.1f} ms CPU), "
            f"{r['wall_sec_per_pair'] * 1000:.1f} ms wall per pair with {r['workers']} worker(s), "
            f"{r['wall_s']:.1f} s in all"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

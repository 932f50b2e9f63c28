"""Compute the Rare Class Sampling statistics of a folder-format dataset root.

DAFormer RCS preprocessing (daformer_mic.md §1.7): per-file class pixel counts of the full-resolution
train-id label PNGs, written to ROOT/sample_class_stats.json and ROOT/samples_with_class.json.

Usage:
    python scripts/compute_class_stats.py ROOT [--labels-dir labels] [--num-classes 19] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.rare_class_sampling import (  # noqa: E402
    RareClassSampler,
    compute_class_stats,
    write_class_stats,
)


def _class_name(c: int, num_classes: int) -> str:
    from src.data.classes import CITYSCAPES_CLASSES

    return CITYSCAPES_CLASSES[c] if num_classes == 19 and c < 19 else str(c)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="dataset root (ROOT/<labels-dir>/*.png, uint8 train ids)")
    ap.add_argument("--labels-dir", default="labels", help="label folder inside ROOT (default: labels)")
    ap.add_argument("--num-classes", type=int, default=19)
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    args = ap.parse_args(argv)

    label_dir = args.root / args.labels_dir
    files = sorted(label_dir.rglob("*.png"))
    if not files:
        print(f"error: no *.png label found under {label_dir}", file=sys.stderr)
        return 1
    stats = compute_class_stats(files, num_classes=args.num_classes, num_workers=args.workers, root=args.root)
    p1, p2 = write_class_stats(args.root, stats)
    print(f"wrote {p1} and {p2} ({len(stats)} label files)")

    totals: dict[int, int] = {}
    n_files: dict[int, int] = {}
    for s in stats:
        for c, n in s["counts"].items():
            totals[c] = totals.get(c, 0) + n
            n_files[c] = n_files.get(c, 0) + 1
    grand = sum(totals.values()) or 1
    probs = {}
    if totals:
        rcs = RareClassSampler(stats=stats)
        probs = dict(zip(rcs.classes, rcs.probabilities.tolist()))
    print(f"{'id':>3} {'class':<14} {'pixels':>14} {'freq':>8} {'files':>7} {'P_rcs(T=0.01)':>14}")
    for c in range(args.num_classes):
        print(
            f"{c:>3} {_class_name(c, args.num_classes):<14} {totals.get(c, 0):>14d} "
            f"{totals.get(c, 0) / grand:>8.4f} {n_files.get(c, 0):>7d} {probs.get(c, 0.0):>14.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

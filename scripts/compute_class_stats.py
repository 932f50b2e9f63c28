"""Compute the Rare Class Sampling statistics of a folder-format dataset root.

DAFormer RCS preprocessing (daformer_mic.md §1.7): per-file class pixel counts of the full-resolution
train-id label PNGs, written to ROOT/sample_class_stats.json and ROOT/samples_with_class.json.

Training computes these files itself on first use for a folder dataset (`data=folder`, from the classes
file; src/data/datasets/folder.py `ensure_class_stats`), and again when the labels change: this script is
for a look at the class frequencies, or for a label folder of another layout (`--labels-dir`).

Usage:
    python scripts/compute_class_stats.py ROOT [--classes-file classes.txt | --num-classes N]
        [--labels-dir labels] [--workers N]

The number of classes and their names come from `--classes-file` (as `data.classes_file`), else
`--num-classes` (ids as names), else the 19 Cityscapes classes (said so in the output). Ids >= the number
of classes (other than 255 = ignore) are not counted and are reported.
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


def main(argv: list[str] | None = None) -> int:
    from src.data.classes import CITYSCAPES_CLASSES, read_classes_file

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="dataset root (ROOT/<labels-dir>/*.png, uint8 train ids)")
    ap.add_argument("--labels-dir", default="labels", help="label folder inside ROOT (default: labels)")
    ap.add_argument("--classes-file", type=Path, default=None,
                    help="one class name a line (line 1 = id 0), as data.classes_file")  # fmt: skip
    ap.add_argument("--num-classes", type=int, default=None,
                    help="without --classes-file: the number of classes (default 19)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    args = ap.parse_args(argv)

    try:
        if args.classes_file is not None:
            names = list(read_classes_file(str(args.classes_file)))
            if args.num_classes is not None and args.num_classes != len(names):
                print(f"error: --num-classes {args.num_classes} but {args.classes_file} names {len(names)} "
                      f"classes; drop --num-classes", file=sys.stderr)  # fmt: skip
                return 1
            source = f"{args.classes_file}"
        elif args.num_classes is not None and args.num_classes != 19:
            names = [str(c) for c in range(args.num_classes)]
            source = f"--num-classes {args.num_classes} (no names: pass --classes-file)"
        else:
            names = list(CITYSCAPES_CLASSES)
            source = "the 19 Cityscapes classes (no --classes-file given)"
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    num_classes = len(names)

    label_dir = args.root / args.labels_dir
    files = sorted(label_dir.rglob("*.png"))
    if not files:
        print(f"error: no *.png label found under {label_dir}", file=sys.stderr)
        return 1
    stats = compute_class_stats(files, num_classes=256, num_workers=args.workers, root=args.root)
    beyond = {}  # ids >= num_classes (not ignore): not counted, reported
    for s in stats:
        for c in [c for c in s["counts"] if num_classes <= c < 255]:
            beyond.setdefault(c, []).append(s["file"])
        s["counts"] = {c: n for c, n in s["counts"].items() if c < num_classes}
    p1, p2 = write_class_stats(args.root, stats)
    print(f"wrote {p1} and {p2} ({len(stats)} label files; classes: {source})")
    if beyond:
        first = min(beyond)
        n_files = len({f for v in beyond.values() for f in v})
        print(f"warning: ids {sorted(beyond)} (not classes of {source}, not 255) in {n_files} label(s), e.g. "
              f"id {first} in {beyond[first][0]}: not counted; training refuses such labels",
              file=sys.stderr)  # fmt: skip

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
    width = max(14, *(len(n) for n in names))
    print(f"{'id':>3} {'class':<{width}} {'pixels':>14} {'freq':>8} {'files':>7} {'P_rcs(T=0.01)':>14}")
    for c in range(num_classes):
        print(
            f"{c:>3} {names[c]:<{width}} {totals.get(c, 0):>14d} "
            f"{totals.get(c, 0) / grand:>8.4f} {n_files.get(c, 0):>7d} {probs.get(c, 0.0):>14.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

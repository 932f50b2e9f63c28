"""Check folder-format splits as training does at start-up, and time the check (src/data/check.py).

    python scripts/check_data.py my_data/source my_data/target my_data/val --classes-file my_data/classes.txt
    python scripts/check_data.py data/synthetic/source data/synthetic/target data/synthetic/val --fresh

Each DIR holds images/ and, when labelled, labels/ (checked when it exists): headers, ends, sizes, label
depth and ids (against --classes-file, else the 19 Cityscapes classes). The results are cached in
DIR/.udass_check.json, as in training; `--fresh` deletes that cache first, to time a first check. Prints
per split the files and the seconds of the check, then of a second, cached check; exit status 1 with one
`error:` line naming the bad files otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.check import CHECK_FILE  # noqa: E402
from src.data.classes import CITYSCAPES_CLASSES, read_classes_file  # noqa: E402
from src.data.datasets.folder import FolderDataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", type=Path, nargs="+", help="folder-format splits (DIR/images, DIR/labels)")
    ap.add_argument("--classes-file", default=None, help="one class name a line (as data.classes_file)")
    ap.add_argument(
        "--fresh", action="store_true", help=f"delete DIR/{CHECK_FILE} first (time a first check)"
    )
    args = ap.parse_args(argv)
    try:
        names = read_classes_file(args.classes_file) if args.classes_file else CITYSCAPES_CLASSES
        total = {"first": 0.0, "cached": 0.0}
        n_files = 0
        for d in args.dirs:
            if args.fresh:
                (d / CHECK_FILE).unlink(missing_ok=True)
            labels = (d / "labels").is_dir()
            times = []
            for _ in range(2):
                t = time.perf_counter()
                ds = FolderDataset(d, labels=labels, key=str(d)).check(len(names), args.classes_file)
                times.append(time.perf_counter() - t)
            n = len(ds) * (2 if labels else 1)
            n_files += n
            total["first"] += times[0]
            total["cached"] += times[1]
            what = "images and labels" if labels else "images"
            print(f"{d}: {n} files ({what}) checked in {times[0]:.3f} s, cached {times[1]:.3f} s")
    except (OSError, ValueError) as e:
        print(f"error: {' | '.join(ln.strip() for ln in str(e).splitlines() if ln.strip())}", file=sys.stderr)
        return 1
    print(f"all: {n_files} files checked in {total['first']:.3f} s, cached {total['cached']:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where the target pixels of each class go: the validation confusion matrices of runs, summed per method.

    python scripts/confusion_summary.py RUN_DIR [RUN_DIR ...] [--classes car truck] [--top 3]

Each RUN_DIR is a training run (its ``results.json`` names the method, its last
``val_dashboard/step*_confusion.csv`` is read); any other folder stands for every run below it. Per method
(the seeds summed): the share of the thing classes' pixels (``src.data.classes.THING_CLASSES``) predicted
right and the share predicted as the most frequent wrong class, then, per class of ``--classes``, its
``--top`` predictions. Read-only; prints a markdown table. Used for the per-class evidence of the README's
results.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.classes import THING_CLASSES  # noqa: E402


def _runs(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if (p / "results.json").is_file():
            out.append(p)
        else:
            found = sorted(q.parent for q in p.rglob("results.json"))  # as aggregate_results.load_results
            if not found:
                raise SystemExit(f"{p}: neither a run (results.json) nor a folder of runs")
            out.extend(found)
    return out


def read_confusion(run: Path) -> tuple[list[str], np.ndarray]:
    """(class names, counts[ground truth, prediction]) of the run's last validation."""
    files = sorted((run / "val_dashboard").glob("step*_confusion.csv"))
    if not files:
        raise SystemExit(f"{run}: no val_dashboard/step*_confusion.csv (was the run validated?)")
    with open(files[-1], newline="") as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    return names, np.array([[float(x) for x in r[1:]] for r in rows[1:]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--classes", nargs="*", default=["car"], help="classes whose predictions to list")
    ap.add_argument("--top", type=int, default=3)
    args = ap.parse_args(argv)

    sums: dict[str, np.ndarray] = {}
    seeds: dict[str, list] = defaultdict(list)
    names: list[str] = []
    for run in _runs(args.runs):
        info = json.loads((run / "results.json").read_text())
        method = str(info.get("method", run.name))
        names, m = read_confusion(run)
        sums[method] = sums.get(method, 0) + m
        seeds[method].append(info.get("seed"))
    for c in args.classes:
        if c not in names:
            raise SystemExit(f"--classes: unknown class {c!r}; one of {names}")
    things = [i for i in THING_CLASSES if i < len(names)]
    head = ["method", "seeds", "thing pixels right", "thing pixels -> most frequent wrong class"]
    head += [f"{c} ->" for c in args.classes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for method, m in sums.items():
        t = m[things]
        right = sum(m[i, i] for i in things) / t.sum()
        wrong = t.sum(0)
        wrong[things] -= np.array([m[i, i] for i in things])
        j = int(wrong.argmax())
        cells = [
            method,
            ",".join(str(s) for s in seeds[method]),
            f"{right:.0%}",
            f"{names[j]} {wrong[j] / t.sum():.0%}",
        ]
        for c in args.classes:
            row = m[names.index(c)] / max(m[names.index(c)].sum(), 1)
            top = np.argsort(-row)[: args.top]
            cells.append(", ".join(f"{names[k]} {row[k]:.0%}" for k in top))
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Turn the results.json files of runs (e.g. a Hydra multirun over methods x seeds) into a table.

    python scripts/aggregate_results.py logs/train/multiruns/2026-11-22_12-00-00 [more dirs ...] \
        [--out results/synthetic_benchmark] [--per-class]

Rows group runs by (method, data, model, steps); each cell is mean ± std over the seeds (sample std,
n-1; a single seed shows its value alone, an empty std in the CSV), in percent. Writes `<out>.md`
(markdown) and `<out>.csv` (one row per group, per-class means too) and prints the markdown. Where the
runs hold a `source_only` and an `oracle` row of the same (data, model, steps), every row of those gets its
"gap closed" = (mIoU − source only) / (oracle − source only) on the seeds' means, in percent.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

KEY = ("method", "data", "model", "steps")


def load_results(dirs: list[Path]) -> list[dict]:
    runs = []
    for d in dirs:
        if not d.exists():
            raise FileNotFoundError(f"{d} does not exist: pass a run or multirun directory")
        found = sorted(d.rglob("results.json")) if d.is_dir() else [d]
        if not found:
            raise FileNotFoundError(f"no results.json under {d}: did the runs finish?")
        for f in found:
            r = json.loads(f.read_text())
            missing = [k for k in ("mIoU", "per_class", *KEY) if k not in r]
            if missing:
                raise ValueError(f"{f} lacks {missing}: not a results.json of src.train/src.eval")
            r["_file"] = str(f)
            runs.append(r)
    return runs


def mean_std(values: list[float | None]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def fmt(m: float | None, s: float | None) -> str:
    """``mean ± std``; one seed has no spread: the value alone."""
    if m is None:
        return "n/a"
    return f"{m:.1f}" if s is None else f"{m:.1f} ± {s:.1f}"


def aggregate(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[tuple(r[k] for k in KEY)].append(r)
    rows = []
    for key, rs in groups.items():
        row = dict(zip(KEY, key))
        row["seeds"] = sorted(r.get("seed") for r in rs)
        row["mIoU"] = mean_std([r["mIoU"] for r in rs])
        subsets = sorted({s for r in rs for s in r.get("subsets", {})})
        row["subsets"] = {s: mean_std([r.get("subsets", {}).get(s) for r in rs]) for s in subsets}
        row["teacher_mIoU"] = mean_std([r.get("teacher_mIoU") for r in rs])
        classes = list(rs[0]["per_class"])
        row["per_class"] = {c: mean_std([r["per_class"].get(c) for r in rs]) for c in classes}
        rows.append(row)
    rows.sort(key=lambda r: (r["data"], r["mIoU"][0] if r["mIoU"][0] is not None else -1))
    ends = {(r["data"], r["model"], r["steps"], r["method"]): r["mIoU"][0] for r in rows}
    for r in rows:
        setting = (r["data"], r["model"], r["steps"])
        src, oracle = ends.get((*setting, "source_only")), ends.get((*setting, "oracle"))
        ok = None not in (src, oracle, r["mIoU"][0]) and oracle != src
        r["gap_closed"] = 100.0 * (r["mIoU"][0] - src) / (oracle - src) if ok else None
    return rows


def to_markdown(rows: list[dict], per_class: bool) -> str:
    subsets = sorted({s for r in rows for s in r["subsets"] if s not in ("all", "19")})
    head = ["method", "data", "model", "steps", "seeds", "mIoU"]
    head += [f"mIoU{s}" for s in subsets] + ["teacher mIoU"]
    closed = any(r.get("gap_closed") is not None for r in rows)
    head += ["gap closed"] if closed else []
    classes = list(rows[0]["per_class"]) if rows and per_class else []
    head += classes
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["data"], r["model"], str(r["steps"]), ",".join(map(str, r["seeds"])),
                 fmt(*r["mIoU"][:2])]  # fmt: skip
        cells += [fmt(*r["subsets"].get(s, (None, None))[:2]) for s in subsets]
        cells.append(fmt(*r["teacher_mIoU"][:2]))
        if closed:
            cells.append("n/a" if r.get("gap_closed") is None else f"{r['gap_closed']:.0f} %")
        cells += [fmt(*r["per_class"][c][:2]) for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    classes = list(rows[0]["per_class"]) if rows else []
    subsets = sorted({s for r in rows for s in r["subsets"]})
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*KEY, "n_seeds", "mIoU_mean", "mIoU_std"]
                   + [f"mIoU{s}_{x}" for s in subsets for x in ("mean", "std")]
                   + [f"IoU_{c}_mean" for c in classes] + ["gap_closed"])  # fmt: skip
        for r in rows:
            w.writerow([*(r[k] for k in KEY), r["mIoU"][2], r["mIoU"][0], r["mIoU"][1]]
                       + [v for s in subsets for v in r["subsets"].get(s, (None, None))[:2]]
                       + [r["per_class"][c][0] for c in classes] + [r.get("gap_closed")])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.csv")
    p.add_argument("--per-class", action="store_true", help="add per-class IoU columns to the markdown")
    args = p.parse_args(argv)
    rows = aggregate(load_results(args.dirs))
    md = to_markdown(rows, args.per_class)
    print(md)
    if args.out:
        # <out>.md / <out>.csv appended, not with_suffix: a name such as lr2.4e-3 keeps its dot
        out = str(args.out).removesuffix(".md").removesuffix(".csv")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out + ".md").write_text(md + "\n")
        write_csv(rows, Path(out + ".csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

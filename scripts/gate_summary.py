"""Mean of each run's logged gates and pseudo-label diagnostics over the second half of the run.

    python scripts/gate_summary.py logs/train/multiruns/<time>/*  [--from-step 500]

Reads ``<run>/csv/metrics.csv`` and ``<run>/results.json`` of every finished run and prints one line per run:
method, seed, target mIoU and the means of ``train/pseudo_weight``, ``pseudo_accuracy``, ``pseudo_precision``,
``pseudo_kept``, ``cam_fg_cells``, ``fdm_active_cells``, ``cdm_keep_rate``, the video module's
``pseudo_confidence``, ``tps_confident`` (the share of TPS's ŷ above ``uda.pseudo.threshold``) and
``tps_consistent`` (the share whose warp passes the forward-backward test, ``uda.pseudo.consistency``) and
``sec_per_step`` over the logged steps >= ``--from-step`` (the README's "logged" columns).

Where a run logs both ``pseudo_weight`` (the mean loss weight of a target pixel) and ``pseudo_precision``
(the share of that weight on pseudo-labels that are right), it also gets ``weight_on_right`` = weight x
precision and ``weight_on_wrong`` = weight x (1 - precision): how much loss weight per target pixel the run
put on right and on wrong pseudo-labels (products of the two means). ``--by-method`` prints instead one line
per method: the mean of every key over its runs (``runs``: how many).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

KEYS = ("pseudo_weight", "pseudo_accuracy", "pseudo_precision", "pseudo_kept", "cam_fg_cells",
        "fdm_active_cells", "cdm_keep_rate", "pseudo_confidence", "tps_confident", "tps_consistent",
        "sec_per_step")  # fmt: skip


def summarize(run: Path, from_step: int) -> dict | None:
    """The means of :data:`KEYS` of one run, or None when it has not finished."""
    metrics, results = run / "csv" / "metrics.csv", run / "results.json"
    if not metrics.is_file() or not results.is_file():
        return None
    r = json.loads(results.read_text())
    rows = list(csv.DictReader(metrics.open()))
    out = {"run": str(run), "method": r["method"], "seed": r["seed"], "mIoU": r["mIoU"]}
    for k in KEYS:
        vals = [float(x[f"train/{k}"]) for x in rows if x.get(f"train/{k}") and int(x["step"]) >= from_step]
        if vals:
            out[k] = round(sum(vals) / len(vals), 3)
    if "pseudo_weight" in out and "pseudo_precision" in out:
        out["weight_on_right"] = round(out["pseudo_weight"] * out["pseudo_precision"], 3)
        out["weight_on_wrong"] = round(out["pseudo_weight"] * (1.0 - out["pseudo_precision"]), 3)
    return out


def by_method(summaries: list[dict]) -> list[dict]:
    """One dict per method (in order of appearance): the mean of every numeric key over its runs."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        groups[s["method"]].append(s)
    out = []
    for method, runs in groups.items():
        row: dict = {"method": method, "runs": len(runs), "seeds": [r["seed"] for r in runs]}
        for k in ("mIoU", *KEYS, "weight_on_right", "weight_on_wrong"):
            vals = [r[k] for r in runs if k in r]
            if vals:
                row[k] = round(sum(vals) / len(vals), 3)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--from-step", type=int, default=500)
    p.add_argument("--by-method", action="store_true", help="one line per method: means over its runs")
    args = p.parse_args(argv)
    summaries = [s for s in (summarize(run, args.from_step) for run in args.runs) if s is not None]
    for s in by_method(summaries) if args.by_method else summaries:
        print(json.dumps(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

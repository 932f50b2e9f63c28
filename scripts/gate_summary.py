"""Mean of each run's logged gates and pseudo-label diagnostics over the second half of the run.

    python scripts/gate_summary.py logs/train/multiruns/<time>/*  [--from-step 500]

Reads ``<run>/csv/metrics.csv`` and ``<run>/results.json`` of every finished run and prints one line per run:
method, seed, target mIoU and the means of ``train/pseudo_weight``, ``pseudo_accuracy``, ``pseudo_precision``,
``pseudo_kept``, ``cam_fg_cells``, ``fdm_active_cells``, ``cdm_keep_rate``, the video module's
``pseudo_confidence``, ``tps_confident`` (the share of TPS's ŷ above ``uda.pseudo.threshold``) and
``tps_consistent`` (the share whose warp passes the forward-backward test, ``uda.pseudo.consistency``) and
``sec_per_step`` over the logged steps >= ``--from-step`` (the README's "logged" columns).
"""

from __future__ import annotations

import argparse
import csv
import json
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
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--from-step", type=int, default=500)
    args = p.parse_args(argv)
    for run in args.runs:
        s = summarize(run, args.from_step)
        if s is not None:
            print(json.dumps(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a finished run's mIoU means: the matching rows of the repo's results tables (issue 15).

The README's tables are made by ``scripts/aggregate_results.py`` into ``results/<table>.csv`` (one row per
method, data, model and steps, mean and std over the seeds). After a run, :func:`reference_lines` finds the
rows of the same setting (data, model, steps) in those files — the source-only baseline and, when the table
has it, the run's own method — so ``make train`` ends by printing what adaptation bought, from numbers a
repo command measured, never typed in.
"""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["reference_rows", "reference_lines"]


def reference_rows(results_dir: Path, *, data: str, model: str, steps: int) -> list[dict]:
    """Rows of ``results_dir/*.csv`` with this (data, model, steps), each with the file it came from."""
    rows: list[dict] = []
    for f in sorted(Path(results_dir).glob("*.csv")):
        try:
            with f.open(newline="") as fh:
                for r in csv.DictReader(fh):
                    if (r.get("data"), r.get("model"), r.get("steps")) == (data, model, str(steps)):
                        rows.append({**r, "_file": f.name})
        except (OSError, csv.Error, UnicodeDecodeError):
            continue  # not a table of aggregate_results.py
    return rows


def _fmt(r: dict) -> str:
    std = r.get("mIoU_std") or ""
    spread = f" ± {float(std):.1f}" if std not in ("", "None") else ""
    return f"{float(r['mIoU_mean']):.1f}{spread} ({r.get('n_seeds', '?')} seeds, results/{r['_file']})"


def reference_lines(
    results_dir: Path, *, method: str, data: str, model: str, steps: int, miou: float
) -> list[str]:
    """Lines to print after a run: its mIoU next to the table's source-only (and own-method) rows."""
    rows = reference_rows(results_dir, data=data, model=model, steps=steps)
    source = next((r for r in rows if r.get("method") == "source_only"), None)
    own = next((r for r in rows if r.get("method") == method), None)
    if source is None:
        return []
    lines = [
        f"target mIoU of this run ({method}): {miou:.1f}",
        f"  source only on this setting: {_fmt(source)}",
    ]
    if own is not None and method != "source_only":
        lines.append(f"  {method} in the table: {_fmt(own)}")
    oracle = next((r for r in rows if r.get("method") == "oracle"), None)
    if oracle is not None:
        lines.append(f"  oracle (target labels): {_fmt(oracle)}")
    return lines

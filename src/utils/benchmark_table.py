"""What a finished run's mIoU means: the matching rows of the repo's results tables (issue 15).

The README's tables are made by ``scripts/aggregate_results.py`` into ``results/<table>.csv`` (one row per
method, data, model and steps, mean and std over the seeds). After a run, :func:`reference_lines` finds the
rows of the same setting (data, model, steps) in those files — the source-only baseline and, when the table
has it, the run's own method — so ``make train`` ends by printing what adaptation bought, from numbers a
repo command measured, never typed in.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

__all__ = ["reference_rows", "reference_lines"]

log = logging.getLogger(__name__)

#: the baseline row's method: image tables (source_only) and video tables (source_only_video)
SOURCE_ONLY = ("source_only", "source_only_video")


def _number(v: object) -> float | None:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def reference_rows(results_dir: Path, *, data: str, model: str, steps: int) -> list[dict]:
    """Rows of ``results_dir/*.csv`` with this (data, model, steps) and a numeric ``mIoU_mean``, each with
    the file it came from. A file that is not a table of aggregate_results.py, or a matching row without a
    number (every seed failed), is left out with one warning naming it: the run itself has finished."""
    rows: list[dict] = []
    for f in sorted(Path(results_dir).glob("*.csv")):
        try:
            with f.open(newline="") as fh:
                table = list(csv.DictReader(fh))
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            log.warning("%s: not read as a results table (%s); re-make it with scripts/aggregate_results.py",
                        f, e)  # fmt: skip
            continue
        for r in table:
            if (r.get("data"), r.get("model"), r.get("steps")) != (data, model, str(steps)):
                continue
            if _number(r.get("mIoU_mean")) is None:
                log.warning("%s: row %s has no mIoU_mean number; re-make it with "
                            "scripts/aggregate_results.py", f, r.get("method"))  # fmt: skip
                continue
            rows.append({**r, "_file": f.name})
    return rows


def _fmt(r: dict) -> str:
    std = _number(r.get("mIoU_std"))
    spread = f" ± {std:.1f}" if std is not None else ""
    return f"{_number(r['mIoU_mean']):.1f}{spread} ({r.get('n_seeds', '?')} seeds, results/{r['_file']})"


def reference_lines(
    results_dir: Path, *, method: str, data: str, model: str, steps: int, miou: float
) -> list[str]:
    """Lines to print after a run: its mIoU next to the table's source-only (and own-method, oracle) rows.

    The own-method and oracle rows come from the source-only row's table when it has them (the same
    benchmark command), else from the first other table that does; each line names its file."""
    rows = reference_rows(results_dir, data=data, model=model, steps=steps)
    source = next((r for r in rows if r.get("method") in SOURCE_ONLY), None)
    if source is None:
        log.info("no source-only row for data=%s model=%s steps=%d in %s: nothing to compare this run with",
                 data, model, steps, results_dir)  # fmt: skip
        return []
    # the source-only row's own table first
    rows = sorted(rows, key=lambda r: r["_file"] != source["_file"])
    own = next((r for r in rows if r.get("method") == method), None)
    lines = [
        f"target mIoU of this run ({method}): {miou:.1f}",
        f"  source only on this setting: {_fmt(source)}",
    ]
    if own is not None and method not in SOURCE_ONLY:
        lines.append(f"  {method} in the table: {_fmt(own)}")
    oracle = next((r for r in rows if r.get("method") == "oracle"), None)
    if oracle is not None:
        lines.append(f"  oracle (target labels): {_fmt(oracle)}")
    return lines

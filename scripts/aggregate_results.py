#!/usr/bin/env python
"""Turn the results.json files of runs (e.g. a Hydra multirun over methods x seeds) into a table.

    python scripts/aggregate_results.py logs/train/multiruns/2026-11-22_12-00-00 [more dirs ...] \
        [--out results/synthetic_benchmark] [--per-class]

Rows group runs by (method, data, model, steps); each cell is mean ± std over the seeds (sample std,
n-1; a single seed shows its value alone, an empty std in the CSV), in percent. Writes `<out>.md`
(markdown) and `<out>.csv` (one row per group, per-class means too) and prints the markdown. Where the
runs hold a `source_only` and an `oracle` row of the same (data, model, steps), every row of those gets its
"gap closed" = (mIoU − source only) / (oracle − source only) on the seeds' means, in percent.

Class groups (a column each, in the markdown and the CSV): ``--group "rare five=train,rider,bus"`` is, per
run, the mean IoU over those classes (a class without IoU in a run, absent from its labels, is left out of
that run's mean, as mIoU does), then mean ± std over the seeds. ``--rare N --source-labels DIR`` adds the
group "rare N": the N classes with instances (Cityscapes' eight, person ... bicycle,
``src.data.classes.INSTANCE_CLASSES``, by name; DAFormer's ten thing classes, traffic light and sign included,
with ``--rare-among things``; every class with ``all``) with the fewest pixels in DIR's label PNGs (train
ids, 255 ignored; e.g. the synthetic source, ``data/synthetic_tg0c0x20/source/labels``); the table's first
line says which they are and their shares of the labelled pixels.

``--rename OLD=NEW`` counts the runs whose method is OLD as method NEW (repeatable): for runs that an override
named apart (``uda.name=omuda_cam_beta2``) whose configuration became NEW's default later, so that their seeds
and NEW's fill one row. A row with the same seed twice is an error (each run counts once).

``--table CSV --rare 5 --source-labels DIR`` (no run dirs) prints those columns for an existing table's rows,
from its per-class mean columns, for tables whose runs' logs are gone.

``--update OUT`` re-runs one row of a table: the rows of these runs replace the rows of the same (method,
data, model, steps) of the existing ``OUT.md`` / ``OUT.csv`` in place (or are appended), every other row is
kept as it was (for tables whose other runs' logs are gone); the markdown's columns must be the same.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.data.classes import CITYSCAPES_CLASSES, INSTANCE_CLASSES, THING_CLASSES  # noqa: E402
from src.data.rare_class_sampling import compute_class_stats  # noqa: E402

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


def rename_methods(runs: list[dict], specs: list[str]) -> list[dict]:
    """``--rename OLD=NEW``: the runs of method OLD count as NEW; an OLD no run has is an error."""
    for spec in specs:
        old, sep, new = spec.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"--rename {spec!r}: write OLD=NEW (e.g. --rename omuda_cam_beta2=omuda)")
        hits = [r for r in runs if r["method"] == old]
        if not hits:
            raise ValueError(
                f"--rename {spec!r}: no run has method {old!r} "
                f"(methods: {sorted({r['method'] for r in runs})})"
            )
        for r in hits:
            r["method"] = new
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


def parse_group(spec: str) -> tuple[str, list[str]]:
    """``"name=class,class,..."`` -> (name, classes)."""
    name, sep, classes = spec.partition("=")
    names = [c.strip() for c in classes.split(",") if c.strip()]
    if not sep or not name.strip() or not names:
        raise ValueError(f"--group {spec!r}: write NAME=CLASS,CLASS,... (e.g. 'rare five=train,rider,bus')")
    return name.strip(), names


def class_names(kind: str) -> set[str] | None:
    """The candidates of ``--rare`` by name: ``instances`` (Cityscapes' eight), ``things`` (DAFormer's ten) or
    ``all`` (None: every class)."""
    if kind == "all":
        return None
    ids = {"instances": INSTANCE_CLASSES, "things": THING_CLASSES}[kind]
    return {CITYSCAPES_CLASSES[i] for i in ids}


def rarest_classes(
    label_dir: Path, classes: list[str], n: int, among: set[str] | None = None
) -> tuple[list[str], list[float]]:
    """The ``n`` classes of ``classes`` (train-id order; only those in ``among`` if given) with the fewest
    pixels in ``label_dir``'s PNGs (counted by RCS's ``compute_class_stats``), and their shares of all
    labelled pixels."""
    files = sorted(label_dir.glob("*.png")) if label_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"--source-labels {label_dir}: no label PNGs there (train ids, e.g. source/labels)"
        )
    pool = [i for i, c in enumerate(classes) if among is None or c in among]
    if not 0 < n <= len(pool):
        raise ValueError(f"--rare {n}: must be between 1 and the number of candidate classes ({len(pool)})")
    counts = [0] * len(classes)
    for entry in compute_class_stats(files, num_classes=len(classes), progress=False):
        for c, k in entry["counts"].items():
            counts[int(c)] += k
    order = sorted(pool, key=lambda i: counts[i])[:n]  # stable: ties keep the train-id order
    total = max(sum(counts), 1)
    return [classes[i] for i in order], [counts[i] / total for i in order]


def group_mean(per_class: dict, members: list[str]) -> float | None:
    """The mean IoU over ``members`` of one run (or one table row); a class without IoU is left out."""
    vals = [per_class[c] for c in members if per_class[c] is not None]
    return sum(vals) / len(vals) if vals else None


def check_groups(groups: dict[str, list[str]], classes: dict, where: str) -> None:
    for name, members in groups.items():
        unknown = [c for c in members if c not in classes]
        if unknown:
            raise ValueError(f"--group {name!r}: {unknown} not among the classes of {where}")


def aggregate(runs: list[dict], class_groups: dict[str, list[str]] | None = None) -> list[dict]:
    """One row per (method, data, model, steps): mean ± std over the seeds; ``class_groups`` (name -> classes)
    adds ``row["groups"][name]``, the mean ± std over the seeds of each run's mean IoU over those classes."""
    class_groups = class_groups or {}
    for r in runs:
        check_groups(class_groups, r["per_class"], r["_file"])
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[tuple(r[k] for k in KEY)].append(r)
    rows = []
    for key, rs in groups.items():
        seen: dict = {}
        for r in rs:
            seed = r.get("seed")
            if seed in seen:
                raise ValueError(
                    f"seed {seed} of {key[0]} twice: {seen[seed]} and {r['_file']}; pass each run once "
                    "(a re-run goes in a table of its own, or --update)"
                )
            seen[seed] = r["_file"]
        row = dict(zip(KEY, key))
        row["seeds"] = sorted(r.get("seed") for r in rs)
        row["mIoU"] = mean_std([r["mIoU"] for r in rs])
        subsets = sorted({s for r in rs for s in r.get("subsets", {})})
        row["subsets"] = {s: mean_std([r.get("subsets", {}).get(s) for r in rs]) for s in subsets}
        row["teacher_mIoU"] = mean_std([r.get("teacher_mIoU") for r in rs])
        classes = list(rs[0]["per_class"])
        row["per_class"] = {c: mean_std([r["per_class"].get(c) for r in rs]) for c in classes}
        row["groups"] = {
            g: mean_std([group_mean(r["per_class"], m) for r in rs]) for g, m in class_groups.items()
        }
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
    group_names = list(rows[0].get("groups", {})) if rows else []
    head += group_names
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
        cells += [fmt(*r["groups"][g][:2]) for g in group_names]
        cells += [fmt(*r["per_class"][c][:2]) for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """(header, rows) of the CSV: one row per group, per-class means, gap closed, class groups."""
    classes = list(rows[0]["per_class"]) if rows else []
    subsets = sorted({s for r in rows for s in r["subsets"]})
    group_names = list(rows[0].get("groups", {})) if rows else []
    header = ([*KEY, "n_seeds", "mIoU_mean", "mIoU_std"]
              + [f"mIoU{s}_{x}" for s in subsets for x in ("mean", "std")]
              + [f"IoU_{c}_mean" for c in classes] + ["gap_closed"]
              + [f"{g}_{x}" for g in group_names for x in ("mean", "std")])  # fmt: skip
    body = [[*(r[k] for k in KEY), r["mIoU"][2], r["mIoU"][0], r["mIoU"][1]]
            + [v for s in subsets for v in r["subsets"].get(s, (None, None))[:2]]
            + [r["per_class"][c][0] for c in classes] + [r.get("gap_closed")]
            + [v for g in group_names for v in r["groups"][g][:2]] for r in rows]  # fmt: skip
    return header, body


def write_csv(rows: list[dict], path: Path) -> None:
    header, body = csv_table(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(body)


def update_tables(rows: list[dict], md: str, out: str) -> None:
    """``--update``: put these rows into the existing ``<out>.md`` / ``<out>.csv``, replacing the rows of the
    same (method, data, model, steps) in place and appending the others; every other row is kept as it is.
    The markdown's header must be the one these rows make (same columns), else the table has to be re-made."""
    md_path, csv_path = Path(out + ".md"), Path(out + ".csv")
    for f in (md_path, csv_path):
        if not f.exists():
            raise FileNotFoundError(f"--update {out}: {f} does not exist; make the table with --out first")
    # CSV: the union of the columns, old ones first (a column the old rows lack stays empty for them)
    with csv_path.open(newline="") as f:
        old = list(csv.reader(f))
    if not old or list(old[0][: len(KEY)]) != list(KEY):
        raise ValueError(
            f"--update {out}: {csv_path} is not a table of aggregate_results.py (re-make it with --out)"
        )
    header, body = csv_table(rows)
    new = {tuple(str(v) for v in b[: len(KEY)]): dict(zip(header, b)) for b in body}
    merged_header = old[0] + [c for c in header if c not in old[0]]
    out_rows, done = [], set()
    for line in old[1:]:
        key = tuple(line[: len(KEY)])
        if key in new:
            out_rows.append([new[key].get(c) for c in merged_header])
            done.add(key)
        else:
            out_rows.append(line + [""] * (len(merged_header) - len(line)))
    out_rows += [[r.get(c) for c in merged_header] for k, r in new.items() if k not in done]
    # markdown: the same header; rows matched on their first four cells
    old_md = md_path.read_text().splitlines()
    new_md = md.splitlines()
    head_old = next((i for i, x in enumerate(old_md) if x.startswith("| method |")), None)
    head_new = next(i for i, x in enumerate(new_md) if x.startswith("| method |"))
    if head_old is None or old_md[head_old] != new_md[head_new]:
        raise ValueError(f"--update {out}: {md_path} has other columns than these rows (per-class, subsets, "
                         "gap closed or groups differ); re-make the whole table with --out")  # fmt: skip

    def key_of(line: str) -> tuple[str, ...]:
        return tuple(c.strip() for c in line.strip("|").split("|")[: len(KEY)])

    new_lines = {key_of(x): x for x in new_md[head_new + 2 :]}
    notes = old_md[:head_old] if head_old else []
    notes = [n for n in notes if n.strip()] + [n for n in new_md[:head_new] if n.strip() and n not in notes]
    lines = []
    for x in old_md[head_old + 2 :]:
        lines.append(new_lines.pop(key_of(x), x))
    lines += list(new_lines.values())
    table = [old_md[head_old], old_md[head_old + 1], *lines]
    md_path.write_text("\n".join([*notes, "", *table] if notes else table) + "\n")
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(merged_header)
        w.writerows(out_rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*", type=Path)
    p.add_argument(
        "--table",
        type=Path,
        default=None,
        metavar="CSV",
        help="instead of run dirs: print the --group / --rare columns of an existing table's rows, "
        "from its per-class mean columns",
    )
    p.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.csv")
    p.add_argument(
        "--update",
        type=Path,
        default=None,
        metavar="OUT",
        help="put these rows into an existing <OUT>.md / <OUT>.csv (same method, data, model and "
        "steps replaced in place, the rest kept): re-running one row of a table",
    )
    p.add_argument("--per-class", action="store_true", help="add per-class IoU columns to the markdown")
    p.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="count the runs of method OLD as method NEW (repeatable)",
    )
    p.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME=CLASS,CLASS",
        help="a column: the mean IoU over these classes (repeatable)",
    )
    p.add_argument(
        "--rare",
        type=int,
        default=None,
        metavar="N",
        help="a column 'rare N': the N classes with the fewest pixels in --source-labels",
    )
    p.add_argument("--source-labels", type=Path, default=None, help="label PNGs (train ids) for --rare")
    p.add_argument(
        "--rare-among",
        choices=("instances", "things", "all"),
        default="instances",
        help="--rare picks among Cityscapes' 8 classes with instances (default), DAFormer's 10 "
        "thing classes or every class",
    )
    args = p.parse_args(argv)
    if (args.rare is None) != (args.source_labels is None):
        p.error("--rare N and --source-labels DIR go together")
    if (args.table is None) == (not args.dirs):
        p.error("pass run directories, or --table CSV (not both)")
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as e:  # bad input: one line naming the file or option
        p.error(str(e))


def class_groups(args: argparse.Namespace, classes: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The ``--group`` / ``--rare`` column groups for these classes, and the lines that say what they are."""
    groups = dict(parse_group(g) for g in args.group)
    notes = [f"{g} = mean IoU over {', '.join(c)}" for g, c in groups.items()]
    if args.rare is not None:
        among = class_names(args.rare_among)
        names, shares = rarest_classes(args.source_labels, classes, args.rare, among)
        groups[f"rare {args.rare}"] = names
        listed = ", ".join(f"{c} {100 * f:.2f} %" for c, f in zip(names, shares))
        notes.insert(0, f"rare {args.rare}: {listed} of the labelled pixels of {args.source_labels}")
    return groups, notes


def table_groups(args: argparse.Namespace) -> int:
    """``--table CSV``: the groups of each row of an existing table, from its per-class *mean* columns (the
    seeds' means; equal to the group column of the runs when no seed lacks a class): for tables whose runs'
    logs are gone."""
    path = args.table
    if not path.exists():
        raise FileNotFoundError(f"--table {path} does not exist")
    with path.open(newline="") as f:
        table = list(csv.DictReader(f))
    classes = [h[len("IoU_") : -len("_mean")] for h in (table[0] if table else {}) if h.startswith("IoU_")]
    if not classes:
        raise ValueError(f"--table {path}: no IoU_<class>_mean columns; not a table of aggregate_results.py")
    groups, notes = class_groups(args, classes)
    check_groups(groups, dict.fromkeys(classes), str(path))
    lines = [f"- {n}" for n in notes] + [
        "",
        "| method | data | model | steps | seeds | mIoU | " + " | ".join(groups) + " |",
    ]
    lines.append("|" + "---|" * (6 + len(groups)))
    for r in table:
        per_class = {c: float(r[f"IoU_{c}_mean"]) if r[f"IoU_{c}_mean"] else None for c in classes}
        cells = [r[k] for k in KEY] + [r.get("n_seeds", ""), fmt(float(r["mIoU_mean"]), None)]
        cells += [fmt(group_mean(per_class, m), None) for m in groups.values()]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.table is not None:
        return table_groups(args)
    runs = rename_methods(load_results(args.dirs), args.rename)
    groups, notes = class_groups(args, list(runs[0]["per_class"]))
    rows = aggregate(runs, groups)
    md = to_markdown(rows, args.per_class)
    md = "\n".join([*(f"- {n}" for n in notes), "", md] if notes else [md])
    print(md)
    if args.out:
        # <out>.md / <out>.csv appended, not with_suffix: a name such as lr2.4e-3 keeps its dot
        out = str(args.out).removesuffix(".md").removesuffix(".csv")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out + ".md").write_text(md + "\n")
        write_csv(rows, Path(out + ".csv"))
    if args.update:
        update_tables(rows, md, str(args.update).removesuffix(".md").removesuffix(".csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

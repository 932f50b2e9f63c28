"""Prepare a real dataset for training: train-id labels, rare-class statistics, class index, manifest.

DAFormer ``tools/convert_datasets/{gta,synthia,cityscapes}.py`` (daformer_mic.md §1.7, §6), plus checks:

    python scripts/prepare_data.py gta5 $DATA_ROOT/gta               [--workers N]
    python scripts/prepare_data.py synthia $DATA_ROOT/synthia
    python scripts/prepare_data.py cityscapes $DATA_ROOT/cityscapes  [--splits train val]

Adverse-condition targets, read as released (their labels are train ids already: nothing is written but the
manifest and, for ACDC's labelled train split, the statistics; src/data/datasets/rgb_anon.py):

    python scripts/prepare_data.py acdc $DATA_ROOT/acdc                [--conditions fog night] [--splits ...]
    python scripts/prepare_data.py dark_zurich $DATA_ROOT/dark_zurich  [--times night] [--splits val test]

Video source clips (video_uda.md §1; src/data/prepare.py ``prepare_video``): labels are mapped on the fly, so
only the frames and labels are checked and the rare-class statistics of the clips' current frames written:

    python scripts/prepare_data.py viper_seq $DATA_ROOT/viper                       (15 classes)
    python scripts/prepare_data.py synthia_seq $DATA_ROOT/SYNTHIA-SEQS-04-DAWN      (12 classes)
    python scripts/prepare_data.py clip_folder my_clips/source                      (train-id labels)

For every image / raw-label pair (in parallel, with a progress bar) it
- decodes the image and the raw label (an unreadable file is reported and its pair skipped),
- reports an image without a label, or a label without an image (the pair is skipped),
- maps the raw ids to train ids with the dataset's one conversion function, resizes a label whose size
  differs from its image to the image size (nearest neighbour; a few GTA5 frames), reports it, and writes
  the train-id PNG (GTA5 ``labels_trainids/``, SYNTHIA ``GT/LABELS_trainids/``, Cityscapes
  ``*_gtFine_labelTrainIds.png``),
and then writes into ROOT:
- ``sample_class_stats.json``: per-file class pixel counts of the full-resolution train-id labels (the
  training split: all of GTA5 / SYNTHIA, Cityscapes train), read by rare-class sampling,
- ``samples_with_class.json``: class -> [(file, pixels), ...], the index rare-class pasting draws from,
- ``manifest.json``: what was prepared, resized and skipped (the readers leave skipped images out),
and ends with a summary (per-class pixel shares, problems). Exit status 0 when pairs were prepared (problems
are warnings), 1 when the root, its layout or every pair is unusable.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import sys
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.classes import CITYSCAPES_CLASSES  # noqa: E402
from src.data.datasets import acdc, cityscapes, dark_zurich, gta5, synthia  # noqa: E402
from src.data.datasets.prepared import MANIFEST_FILE, prepare_pair  # noqa: E402
from src.data.datasets.rgb_anon import LABEL_SUFFIX, check_pair, label_path  # noqa: E402
from src.data.datasets.rgb_anon import find_images as release_images  # noqa: E402
from src.data.prepare import VIDEO_DATASETS, prepare_video  # noqa: E402
from src.data.rare_class_sampling import (  # noqa: E402
    SAMPLES_WITH_CLASS_FILE,
    STATS_FILE,
    RareClassSampler,
    write_class_stats,
)

MANIFEST_FORMAT = 1
NUM_CLASSES = 19
MODULES: dict[str, ModuleType] = {"gta5": gta5, "synthia": synthia, "cityscapes": cityscapes}
LABEL_FILES = {  # where the train-id labels go (the readers look there)
    "gta5": "labels_trainids/NNNNN.png",
    "synthia": "GT/LABELS_trainids/NNNNNNN.png",
    "cityscapes": "gtFine/<split>/<city>/*_gtFine_labelTrainIds.png",
}
# The split whose statistics rare-class sampling reads (the reference computes Cityscapes' on train only).
STATS_SPLIT = "train"
# Releases read in place (ACDC, Dark Zurich): reader class, the selection option and its default.
RELEASES = {
    "acdc": (acdc.ACDCDataset, "conditions", list(acdc.CONDITIONS)),
    "dark_zurich": (dark_zurich.DarkZurichDataset, "times", None),  # None: the time folders present
}


class PrepareError(Exception):
    """A problem that stops the preparation (missing root or release folders); the message says why."""


def find_jobs(dataset: str, root: Path, splits: list[str]) -> dict[str, tuple[list, list[str]]]:
    """{split: (jobs, orphan raw labels)}; PrepareError when the release layout is missing."""
    if not root.is_dir():
        raise PrepareError(f"{root} does not exist: point ROOT at the {dataset} release ({_layout(dataset)})")
    if dataset in ("gta5", "synthia"):
        mod = MODULES[dataset]
        for sub in (mod.IMAGE_DIR, mod.RAW_LABEL_DIR):
            if not (root / sub).is_dir():
                raise PrepareError(
                    f"no folder {root / sub}: {root} must hold the release layout ({_layout(dataset)})"
                )
        out = {"train": mod.gta5_jobs(root) if dataset == "gta5" else mod.synthia_jobs(root)}
    else:
        out = {}
        for split in splits:
            for sub in ("leftImg8bit", "gtFine"):
                if not (root / sub / split).is_dir():
                    raise PrepareError(
                        f"no folder {root / sub / split}: {root} must hold the release layout "
                        f"({_layout(dataset)}); choose the splits you have with --splits"
                    )
            out[split] = cityscapes.cityscapes_jobs(root, split)
    for split, (jobs, _) in out.items():
        if not jobs:
            raise PrepareError(f"{dataset} {split}: no image found under {root} ({_layout(dataset)})")
        if all(j[2] is None for j in jobs):
            raw = "*_gtFine_labelIds.png (gtFine_trainvaltest.zip)" if dataset == "cityscapes" else "label"
            raise PrepareError(f"{dataset} {split}: none of the {len(jobs)} images under {root} has a {raw}")
    return out


def _layout(dataset: str) -> str:
    classes = {
        "gta5": gta5.GTA5Dataset,
        "synthia": synthia.SynthiaDataset,
        "cityscapes": cityscapes.CityscapesDataset,
        "acdc": acdc.ACDCDataset,
        "dark_zurich": dark_zurich.DarkZurichDataset,
    }
    return classes[dataset].layout


def release_jobs(
    dataset: str, root: Path, splits: list[str] | None, selection: list[str] | None
) -> dict[str, tuple[list, list[str], list]]:
    """{split: (jobs (name, image, label or None, labelled), orphan labels, groups)} of an ACDC / Dark Zurich
    root; PrepareError naming the missing folder. Default splits: ACDC's three; Dark Zurich's present ones."""
    cls, option, default = RELEASES[dataset]
    if not root.is_dir():
        raise PrepareError(f"{root} does not exist: point ROOT at the {cls.title} release ({cls.layout})")
    explicit = splits is not None
    splits = list(splits or cls.split_names)
    out = {}
    for split in splits:
        chosen = selection
        if (
            chosen is None and default is None
        ):  # Dark Zurich: the time folders present (train), night otherwise
            base = dark_zurich.split_root(root, split) / "rgb_anon" / split
            chosen = [t for t in dark_zurich.TIMES if (base / t).is_dir()] if split == "train" else None
            if split == "train" and not chosen:
                chosen = ["night"]  # reported missing below
        try:
            groups = cls.groups(root, split, chosen if chosen is not None else default)
        except ValueError as e:
            raise PrepareError(str(e)) from None
        missing = [
            g for g in groups if not g.images.is_dir() or (g.labels is not None and not g.labels.is_dir())
        ]
        if missing and not explicit and dataset == "dark_zurich" and len(missing) == len(groups):
            continue  # an archive not downloaded (e.g. the test set): skipped unless --splits names it
        if missing:
            g = missing[0]
            path = g.images if not g.images.is_dir() else g.labels
            hint = f"choose what you have with --{option} / --splits" if dataset == "acdc" else "or --splits"
            raise PrepareError(
                f"no folder {path} ({g.what}): {root} must hold the release layout ({cls.layout}); {hint}"
            )
        jobs, orphans = [], []
        for g in groups:
            images = release_images(g)
            for name, img in images.items():
                lab = label_path(g, img)
                jobs.append((name, str(img), None if lab is None else str(lab), g.labels is not None))
            if g.labels is not None:
                wanted = {label_path(g, p) for p in images.values()}
                orphans += [str(p) for p in sorted(g.labels.glob(f"*/*{LABEL_SUFFIX}")) if p not in wanted]
        if not jobs:
            raise PrepareError(
                f"{cls.title} {split}: no *_rgb_anon.png image under {groups[0].images} ({cls.layout})"
            )
        out[split] = (jobs, orphans, groups)
    if not out:
        raise PrepareError(f"{cls.title}: no split found under {root} ({cls.layout})")
    return out


def prepare_release(
    dataset: str, root: Path, *, splits: list[str] | None = None, selection: list[str] | None = None,
    workers: int = 1, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Check every pair of an ACDC / Dark Zurich root; write the manifest (and the labelled train split's
    statistics). Returns the manifest."""
    from tqdm import tqdm

    root = Path(root)
    found = release_jobs(dataset, root, splits, selection)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "dataset": dataset,
        "root": str(root),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "label_files": f"as released: *{LABEL_SUFFIX} (nothing written)",
        "num_classes": NUM_CLASSES,
        "class_names": list(CITYSCAPES_CLASSES),
        "splits": {},
    }
    for split, (jobs, orphans, groups) in found.items():
        bar = dict(total=len(jobs), desc=f"{dataset} {split}", unit="img", disable=not progress)
        if workers > 1 and len(jobs) > 1:
            with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                chunk = max(1, min(32, len(jobs) // (workers * 8)))
                records = list(tqdm(pool.imap(check_pair, jobs, chunksize=chunk), **bar))
        else:
            records = [check_pair(j) for j in tqdm(jobs, **bar)]
        good = [r for r in records if r["status"] == "ok"]
        skipped = [r for r in records if r["status"] != "ok"]
        totals = [0] * NUM_CLASSES
        for r in good:
            for c, n in r["counts"].items():
                totals[int(c)] += n
        labelled = all(g.labels is not None for g in groups)
        manifest["splits"][split] = {
            "groups": [g.name for g in groups],
            "labelled": labelled,
            "images": len(jobs),
            "prepared": len(good),
            "resized": [],
            "skipped": [{"name": r["name"], "reason": r["status"], "message": r["message"]} for r in skipped],
            "orphan_labels": [str(Path(o).relative_to(root).as_posix()) for o in orphans],
            "class_pixels": dict(zip(CITYSCAPES_CLASSES, totals)),
        }
        if split == STATS_SPLIT and labelled and good:  # ACDC train: for ACDC as a labelled source
            labels = {j[0]: Path(j[2]) for j in jobs}
            stats = [
                {"file": labels[r["name"]].relative_to(root).as_posix(), "counts": r["counts"]} for r in good
            ]
            write_class_stats(root, stats)
            manifest["stats"] = {"split": split, "files": [STATS_FILE, SAMPLES_WITH_CLASS_FILE]}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def run_jobs(dataset: str, jobs: list, workers: int, progress: bool, desc: str) -> list[dict[str, Any]]:
    """prepare_pair over the jobs, in a process pool when workers > 1; results in job order."""
    from tqdm import tqdm

    mod = MODULES[dataset]
    fn = partial(prepare_pair, read_raw_label=mod.read_raw_label, to_train_ids=mod.to_train_ids,
                 num_classes=NUM_CLASSES)  # fmt: skip
    bar = dict(total=len(jobs), desc=desc, unit="img", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            chunk = max(1, min(32, len(jobs) // (workers * 8)))
            return list(tqdm(pool.imap(fn, jobs, chunksize=chunk), **bar))
    return [fn(j) for j in tqdm(jobs, **bar)]


def prepare(
    dataset: str, root: Path, *, splits: list[str] | None = None, workers: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Prepare ``root``; returns the manifest (also written to ROOT/manifest.json)."""
    root = Path(root)
    splits = list(splits or (["train", "val"] if dataset == "cityscapes" else ["train"]))
    found = find_jobs(dataset, root, splits)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "dataset": dataset,
        "root": str(root),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "label_files": LABEL_FILES[dataset],
        "num_classes": NUM_CLASSES,
        "class_names": list(CITYSCAPES_CLASSES),
        "splits": {},
    }
    for split, (jobs, orphans) in found.items():
        records = run_jobs(dataset, jobs, workers, progress, desc=f"{dataset} {split}")
        outputs = {j[0]: Path(j[3]) for j in jobs}
        good = [r for r in records if r["status"] in ("ok", "resized")]
        skipped = [r for r in records if r["status"] not in ("ok", "resized")]
        for r in skipped:  # a label left from an earlier run must not outlive its now-unusable pair
            outputs[r["name"]].unlink(missing_ok=True)
        totals = [0] * NUM_CLASSES
        for r in good:
            for c, n in r["counts"].items():
                totals[int(c)] += n
        manifest["splits"][split] = {
            "images": len(jobs),
            "prepared": len(good),
            "resized": [
                {"name": r["name"], "message": r["message"]} for r in records if r["status"] == "resized"
            ],
            "skipped": [{"name": r["name"], "reason": r["status"], "message": r["message"]} for r in skipped],
            "orphan_labels": [str(Path(o).relative_to(root).as_posix()) for o in orphans],
            "class_pixels": dict(zip(CITYSCAPES_CLASSES, totals)),
        }
        if split == STATS_SPLIT:
            stats = [
                {"file": outputs[r["name"]].relative_to(root).as_posix(), "counts": r["counts"]} for r in good
            ]
            if stats:
                write_class_stats(root, stats)
                manifest["stats"] = {"split": split, "files": [STATS_FILE, SAMPLES_WITH_CLASS_FILE]}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def summary(manifest: dict[str, Any], max_list: int = 10) -> str:
    """The end-of-run report: counts, per-class pixel shares and RCS probabilities, problems."""
    lines = [f"{manifest['dataset']} prepared under {manifest['root']}"]
    for split, s in manifest["splits"].items():
        groups = f" ({', '.join(s['groups'])})" if s.get("groups") else ""
        what = "image/label pairs" if s.get("labelled", True) else "unlabelled images"
        lines.append(
            f"  {split}{groups}: {s['prepared']} of {s['images']} {what} prepared, {len(s['resized'])} "
            f"label(s) resized, {len(s['skipped'])} pair(s) skipped, {len(s['orphan_labels'])} label(s) "
            f"without image"
        )
    stats_split = manifest.get("stats", {}).get("split")
    if stats_split:
        root = Path(manifest["root"])
        lines.append(f"  wrote {root / STATS_FILE}, {root / SAMPLES_WITH_CLASS_FILE} ({stats_split} split)")
        pixels = manifest["splits"][stats_split]["class_pixels"]
        grand = sum(pixels.values()) or 1
        stats = json.loads((root / STATS_FILE).read_text())
        probs = dict(zip(*_rcs_probs(stats)))
        lines.append(f"  {'id':>3} {'class':<14} {'pixels':>14} {'share':>8} {'P_rcs':>8}")
        for c, (name, n) in enumerate(pixels.items()):
            lines.append(f"  {c:>3} {name:<14} {n:>14d} {n / grand:>8.4f} {probs.get(c, 0.0):>8.4f}")
    lines.append(f"  wrote {Path(manifest['root']) / MANIFEST_FILE}")
    for split, s in manifest["splits"].items():
        for title, entries in (
            ("resized (label size != image size, nearest)", [e["message"] for e in s["resized"]]),
            ("SKIPPED (left out of training)", [f"{e['reason']}: {e['message']}" for e in s["skipped"]]),
            ("labels without an image (ignored)", s["orphan_labels"]),
        ):
            if entries:
                lines.append(f"WARNING {split}: {len(entries)} {title}:")
                lines += [f"    {e}" for e in entries[:max_list]]
                if len(entries) > max_list:
                    lines.append(f"    ... {len(entries) - max_list} more in {MANIFEST_FILE}")
    if any(s["skipped"] for s in manifest["splits"].values()):
        lines.append("Re-copy or delete the skipped files and run this command again to include them.")
    return "\n".join(lines)


def _rcs_probs(stats: list[dict[str, Any]]) -> tuple[tuple[int, ...], list[float]]:
    try:
        rcs = RareClassSampler(stats=stats)
    except ValueError:
        return (), []
    return rcs.classes, rcs.probabilities.tolist()


def main_video(args: argparse.Namespace) -> int:
    """A video source clip dataset: frames and labels checked, current-frame statistics written."""
    try:
        r = prepare_video(args.dataset, args.root, workers=args.workers, progress=not args.no_progress,
                          num_classes=args.num_classes)  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    grand = sum(r["class_pixels"].values()) or 1
    print(f"{r['dataset']}: {r['clips']} clips checked under {r['root']}; wrote {', '.join(r['files'])}")
    print(f"  {'id':>3} {'class':<14} {'pixels':>14} {'share':>8}")
    for c, (name, n) in enumerate(r["class_pixels"].items()):
        print(f"  {c:>3} {name:<14} {n:>14d} {n / grand:>8.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "dataset",
        choices=sorted([*MODULES, *RELEASES]) + sorted(VIDEO_DATASETS),
        help="which release ROOT holds",
    )
    ap.add_argument("root", type=Path, help="dataset root, e.g. $DATA_ROOT/gta")
    ap.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="processes (default: min(8, CPUs))"
    )
    ap.add_argument(
        "--splits",
        nargs="+",
        default=None,
        help="cityscapes (default: train val), acdc (train val test), dark_zurich (those present)",
    )
    ap.add_argument(
        "--conditions", nargs="+", default=None, help="acdc: conditions (default: fog night rain snow)"
    )
    ap.add_argument(
        "--times", nargs="+", default=None, help="dark_zurich train: times of day (default: present)"
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--num-classes", type=int, default=None, help="clip_folder: classes (default 19)")
    args = ap.parse_args(argv)
    if args.dataset in VIDEO_DATASETS:
        return main_video(args)
    if args.splits and args.dataset in ("gta5", "synthia"):
        ap.error("--splits applies to cityscapes, acdc and dark_zurich (GTA5 and SYNTHIA have no split)")
    if args.conditions and args.dataset != "acdc" or args.times and args.dataset != "dark_zurich":
        ap.error("--conditions applies to acdc, --times to dark_zurich")
    try:
        if args.dataset in RELEASES:
            manifest = prepare_release(args.dataset, args.root, splits=args.splits,
                                       selection=args.conditions or args.times, workers=args.workers,
                                       progress=not args.no_progress)  # fmt: skip
        else:
            manifest = prepare(args.dataset, args.root, splits=args.splits, workers=args.workers,
                               progress=not args.no_progress)  # fmt: skip
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(manifest))
    if not any(s["prepared"] for s in manifest["splits"].values()):
        print("error: no image/label pair could be prepared", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Pack a prepared dataset into LitData chunks for streaming (`data.streaming=true`).

    python scripts/pack_dataset.py experiment=mic_synthetic                   # -> data/packed/synthetic
    python scripts/pack_dataset.py data=gta_to_cityscapes --out /scratch/packed/gta_cs --workers 16
    python scripts/pack_dataset.py experiment=udass_viper --interval 1 --out /scratch/packed/viper_cs
    aws s3 sync /scratch/packed/gta_cs s3://my-bucket/gta_cs                  # then, on the cluster:
    python -m src.train experiment=daformer_gta data.streaming=true data.streaming_dir=s3://my-bucket/gta_cs

The positional arguments are the Hydra overrides of the training run (the same `data=...`, `experiment=...`,
`paths.data_dir=...`): the script builds that run's source, target and validation datasets and writes each
as `<out>/<split>/` (LitData `index.json` + `chunk-*.bin`, `pack.json`, and the rare-class statistics of the
split's root). Items are the original PNG/JPEG bytes (no re-encoding) or, for datasets without files
behind their items, their arrays losslessly encoded (src/data/streaming.py). `--out` defaults to the run's
`data.streaming_dir` (`${paths.data_dir}/packed/${data.name}`) and must be a local folder; copy it to an
object store afterwards. Needs LitData: pip install -e '.[streaming]'.

Video data configs (`VideoUDADataModule`) pack per clip what the run reads: frames t, t-1 and their labels
and flow for source and validation, and for the target the frames t, t-1, t-Δ, t-Δ-1 and the four flows of
`data.interval` Δ (`--interval N` is `data.interval=N`; the interval is stored and a run with another one
stops with the fix). With `data.flow.source=dis` no flows are packed (the run computes them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.data.streaming import SPLITS, is_url, pack_clip_split, pack_split  # noqa: E402


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import src.utils.config  # noqa: F401  (resolvers)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=[*overrides, "data.streaming=false"])


def _size(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides of the training run, e.g. data=gta_to_cityscapes"
    )
    p.add_argument("--out", default=None, help="output folder (default: the run's data.streaming_dir)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to pack")
    p.add_argument("--workers", type=int, default=1, help="packing processes (default: 1)")
    p.add_argument("--chunk-bytes", default="64MB", help="target chunk size (LitData; default: 64MB)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument(
        "--interval", type=int, default=None, help="video data: Δ of the target clips (= data.interval=N)"
    )
    args = p.parse_args(argv)

    from omegaconf import OmegaConf

    from src.train import build_datamodule

    interval = [] if args.interval is None else [f"data.interval={args.interval}"]
    overrides = list(args.overrides) + interval
    cfg = compose(list(args.overrides) + [f"++{o}" for o in interval])  # image configs: refused below
    if args.interval is not None and not cfg.data.get("video", False):
        print(
            f"error: --interval is for video data configs; data={cfg.data.name} packs images", file=sys.stderr
        )
        return 1
    default_out = OmegaConf.select(cfg, "data.streaming_dir", default=None)
    if default_out is None:  # a data config without the streaming keys: their default
        default_out = str(Path(cfg.paths.data_dir) / "packed" / str(cfg.data.name))
    out = args.out if args.out is not None else str(default_out)
    if is_url(out):
        print(f"error: --out must be a local folder (got {out}); pack locally, then copy the folder to the "
              "object store (e.g. aws s3 sync)", file=sys.stderr)  # fmt: skip
        return 1
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    datasets = {"source": dm.source, "target": dm.target, "val": dm.val}
    video = hasattr(dm, "split_needs")  # VideoUDADataModule: clip datasets
    extra = f" (clips, data.interval={dm.interval}, data.flow.source={dm.flow.source})" if video else ""
    print(f"packing {cfg.data.name} into {out}{extra}")
    for split in args.splits:
        ds = datasets[split]
        if ds is None:
            print(f"  {split:<7} none in this configuration, skipped")
            continue
        t0 = time.perf_counter()
        kw = {"split": split, "num_workers": args.workers, "chunk_bytes": args.chunk_bytes,
              "overwrite": args.overwrite}  # fmt: skip
        try:
            if video:
                offsets, label_offsets, flow_pairs = dm.split_needs(split, ds)
                interval = dm.interval if split == "target" else None  # only the target depends on Δ
                meta = pack_clip_split(ds, Path(out) / split, offsets=offsets, label_offsets=label_offsets,
                                       flow_pairs=flow_pairs, interval=interval, flow_source=dm.flow.source,
                                       **kw)  # fmt: skip
            else:
                meta = pack_split(ds, Path(out) / split, **kw)
        except (FileExistsError, ValueError, TypeError, OSError) as e:
            print(f"error: {split}: {e}", file=sys.stderr)
            return 1
        d = Path(out) / split
        chunks = len(list(d.glob("*.bin")))
        stats = f", statistics: {', '.join(meta['files'])}" if meta["files"] else ""
        fields = ", ".join(meta["fields"] if video else meta["formats"])
        print(f"  {split:<7} {meta['num_items']} items ({meta['stored']}: {fields}) -> "
              f"{chunks} chunks, {_size(d):.1f} MB, {time.perf_counter() - t0:.1f} s{stats}")  # fmt: skip
    plus = "" if "streaming_dir" in cfg.data else "+"  # a data config that does not declare the keys
    print(f"stream it: python -m src.train {' '.join(overrides)} {plus}data.streaming=true "
          f"{plus}data.streaming_dir={out}".replace("  ", " "))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

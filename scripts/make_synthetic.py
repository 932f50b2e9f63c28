"""Generate (or check) the embedded synthetic two-domain street-scene dataset.

Writes ROOT/{source,target,val}/{images,labels}/NNNNN.png, ROOT/classes.txt and ROOT/manifest.json
(see src/data/datasets/synthetic.py). Does nothing when ROOT already holds the dataset for the same
parameters, unless --force is given.

Usage:
    python scripts/make_synthetic.py ROOT [--num-source 400] [--num-target 400] [--num-val 100]
        [--height 128] [--width 256] [--seed 0] [--gap 1.0] [--thing-gap G] [--palette-gap G]
        [--camera-gap G] [--workers 1] [--force]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.datasets.synthetic import ensure_synthetic_dataset, generate_synthetic_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="output folder (created; replaced atomically when regenerated)")
    ap.add_argument("--num-source", type=int, default=400, help="source-domain training images (default 400)")
    ap.add_argument("--num-target", type=int, default=400, help="target-domain training images (default 400)")
    ap.add_argument("--num-val", type=int, default=100, help="target-domain validation images (default 100)")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gap", type=float, default=1.0, help="domain-gap strength, 0 = no gap (default 1.0)")
    ap.add_argument("--thing-gap", type=float, default=None,
                    help="gap of the thing classes' palettes and size only (default: --gap); 0 draws the "
                    "target's vehicles and people like the source's, the rest kept")  # fmt: skip
    ap.add_argument("--palette-gap", type=float, default=None,
                    help="gap of the other materials' palettes (road, building, vegetation, ...; default: "
                    "--gap); --gap then scales textures, camera, lighting, noise and hood")  # fmt: skip
    ap.add_argument("--camera-gap", type=float, default=None,
                    help="gap of the camera's height and horizon only (default: --gap); 0 places the "
                    "target's camera like the source's, the rest kept")  # fmt: skip
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--force", action="store_true", help="regenerate even when ROOT is up to date")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    # thing_gap / palette_gap / camera_gap None = the generator default (gap); the manifest records them only
    # when set
    params = dict(num_source=args.num_source, num_target=args.num_target, num_val=args.num_val,
                  height=args.height, width=args.width, seed=args.seed, gap=args.gap,
                  thing_gap=args.thing_gap, palette_gap=args.palette_gap,
                  camera_gap=args.camera_gap)  # fmt: skip
    make = generate_synthetic_dataset if args.force else ensure_synthetic_dataset
    root = make(args.root, **params, num_workers=args.workers)
    print(f"synthetic dataset ready at {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

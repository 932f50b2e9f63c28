"""A run trains on LitData chunks (data.streaming=true) with rare-class sampling, without the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("litdata")  # a guard only: litdata is in the `dev` extra, so this runs by default

from scripts.pack_dataset import main as pack_main  # noqa: E402
from src.train import train  # noqa: E402
from tests.conftest import TINY_SYNTHETIC  # noqa: E402


def test_training_streams_the_packed_chunks(data_dir, train_cfg, tmp_path):
    packed = tmp_path / "packed"
    assert pack_main([f"paths.data_dir={data_dir}", *TINY_SYNTHETIC, "--out", str(packed)]) == 0
    # the original files are out of reach: every split must come from the chunks
    stream = ["data.streaming=true", f"data.streaming_dir={packed}", f"data.root={tmp_path / 'absent'}"]
    cfg = train_cfg(
        "experiment=source_only_synthetic", "uda.rcs.enabled=true", "uda.rcs.min_pixels=50", *stream
    )
    out = train(cfg)
    assert out["steps"] == 3 and out["mIoU"] is not None and len(out["per_class"]) == 19
    assert json.loads(Path(cfg.paths.output_dir, "results.json").read_text()) == out


def test_quadmix_reads_its_rare_class_donors_from_the_chunks(data_dir, train_cfg, tmp_path):
    """UDASS QuadMix's long-tail donors come from the packed source split (its index and its items)."""
    packed = tmp_path / "packed"
    assert pack_main([f"paths.data_dir={data_dir}", *TINY_SYNTHETIC, "--out", str(packed)]) == 0
    stream = ["data.streaming=true", f"data.streaming_dir={packed}", f"data.root={tmp_path / 'absent'}"]
    cfg = train_cfg("experiment=udass_synthetic", "uda.mix.quadmix_start=1",
                    "uda.mix.rare_paster.min_pixels=1", *stream)  # fmt: skip
    out = train(cfg)
    assert out["steps"] == 3 and len(out["per_class"]) == 19
    header = Path(cfg.paths.output_dir, "csv", "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/loss_mix" in header


@pytest.mark.slow
def test_ddp_ranks_stream_from_an_object_store_url(data_dir, tmp_path):
    """2 DDP ranks (gloo, CPU), one data-loader worker each, read an object-store URL (`local:` is LitData's
    stand-in for s3:// and co.) through one node-local chunk cache."""
    import os
    import subprocess
    import sys

    from tests.conftest import FAST_TRAINER, ROOT

    packed, cache = tmp_path / "packed", tmp_path / "cache"
    assert pack_main([f"paths.data_dir={data_dir}", *TINY_SYNTHETIC, "--out", str(packed)]) == 0
    cmd = [sys.executable, "-m", "src.train", f"paths.data_dir={data_dir}", *TINY_SYNTHETIC, *FAST_TRAINER,
           "experiment=source_only_synthetic", "uda.rcs.enabled=true", "uda.rcs.min_pixels=50", "trainer=ddp",
           "trainer.accelerator=cpu", "trainer.devices=2", "data.num_workers=1", "data.streaming=true",
           f"data.streaming_dir=local:{packed}", f"data.streaming_cache_dir={cache}",
           f"data.root={tmp_path / 'absent'}", f"paths.output_dir={tmp_path / 'run'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 3
    chunks = [p for p in cache.rglob("chunk-*.bin") if "udass_meta" not in p.parts]
    assert len(chunks) == 3  # one chunk per split, downloaded once for both ranks and their workers

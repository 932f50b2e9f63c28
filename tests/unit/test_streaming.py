"""Streaming data (src/data/streaming.py, scripts/pack_dataset.py): the tiny synthetic dataset packed into
LitData chunks reads back item for item, the training stream (rare-class sampling included) is the one of
the file datasets, object-store URLs cache their chunks, and arbitrary arrays (optical flows) round-trip.
A training run with data.streaming=true: tests/test_streaming_train.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("litdata")  # a guard only: litdata is in the `dev` extra, so this suite runs by default

from scripts.pack_dataset import main as pack_main  # noqa: E402
from src.data.datasets.folder import FolderDataset  # noqa: E402
from src.data.rare_class_sampling import STATS_FILE  # noqa: E402
from src.data.streaming import PACK_FILE, StreamingSplit, open_split, pack_split  # noqa: E402
from src.train import build_datamodule  # noqa: E402
from tests.conftest import TINY_SYNTHETIC, compose_cfg  # noqa: E402

RCS = ["uda.rcs.enabled=true", "uda.rcs.min_pixels=50"]  # rare-class sampling on the 64x128 images


@pytest.fixture(scope="module")
def packed(data_dir, tmp_path_factory) -> Path:
    """The tiny synthetic dataset packed by scripts/pack_dataset.py (source, target, val)."""
    out = tmp_path_factory.mktemp("packed") / "synthetic"
    assert pack_main([f"paths.data_dir={data_dir}", *TINY_SYNTHETIC, "--out", str(out)]) == 0
    return out


def _dm(data_dir, *overrides: str):
    cfg = compose_cfg("train", [f"paths.data_dir={data_dir}", "paths.output_dir=unused", *TINY_SYNTHETIC,
                                *overrides])  # fmt: skip
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _same_items(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        _same_items(a[k], b[k]) if isinstance(a[k], dict) else torch.equal(a[k], b[k]) for k in a
    )


def test_packed_splits_hold_the_original_files(packed, data_dir):
    # the synthetic target keeps its labels for the pseudo-label diagnostics (data.target_diagnostic_labels,
    # `diag_gt`, never a loss), so the packed target holds them too
    for split, labels in (("source", True), ("target", True), ("val", True)):
        files = FolderDataset(data_dir / "synthetic" / split, labels=labels)
        s = StreamingSplit(packed / split)
        meta = json.loads((packed / split / PACK_FILE).read_text())
        assert meta["stored"] == "files" and meta["num_items"] == len(files) == len(s)
        assert s.has_labels == labels
        for i in range(len(files)):
            (img_a, lab_a), (img_b, lab_b) = files.load(i), s.load(i)
            assert img_b.dtype == np.uint8 and np.array_equal(img_a, img_b)
            assert (lab_a is None and lab_b is None) or np.array_equal(lab_a, lab_b)
            assert s.name(i) == files.name(i)
            if labels:
                assert s.label_key(i) == files.label_key(i) and s.index_of(files.label_key(i)) == i
        # the chunks hold the encoded files, not decoded arrays: no bigger than the files themselves
        chunk_bytes = sum(p.stat().st_size for p in (packed / split).glob("*.bin"))
        file_bytes = sum(p.stat().st_size for pair in files.items for p in pair if p is not None)
        assert file_bytes <= chunk_bytes < file_bytes * 1.1
    assert (packed / "source" / STATS_FILE).read_bytes() == (
        data_dir / "synthetic/source" / STATS_FILE
    ).read_bytes()


def test_streaming_training_stream_matches_the_files_with_rare_class_sampling(packed, data_dir):
    files = _dm(data_dir, *RCS)
    stream = _dm(data_dir, *RCS, "data.streaming=true", f"data.streaming_dir={packed}")
    assert isinstance(stream.source, StreamingSplit) and isinstance(stream.val, StreamingSplit)
    rcs_f, rcs_s = files.rare_class_sampler(), stream.rare_class_sampler()
    assert rcs_s is not None and rcs_s.classes == rcs_f.classes  # statistics read from the packed root
    np.testing.assert_array_equal(rcs_s.probabilities, rcs_f.probabilities)
    ds_f, ds_s = files.train_dataset(rank=1), stream.train_dataset(rank=1)
    for i in range(24):
        assert _same_items(ds_f[i], ds_s[i]), i
    # validation items too
    vf, vs = next(iter(files.val_dataloader())), next(iter(stream.val_dataloader()))
    assert vf["name"] == vs["name"] and torch.equal(vf["img"], vs["img"]) and torch.equal(vf["gt"], vs["gt"])


def test_data_loader_workers_read_the_same_stream(packed, data_dir):
    """Forked workers open their own LitData reader; batches equal the single-process file pipeline."""
    files = _dm(data_dir, *RCS)
    stream = _dm(data_dir, *RCS, "data.streaming=true", f"data.streaming_dir={packed}")
    stream.source.load(0)  # a reader opened in the parent must not be inherited by the workers
    a = DataLoader(files.train_dataset(), batch_size=2, sampler=range(8), num_workers=0)
    b = DataLoader(stream.train_dataset(), batch_size=2, sampler=range(8), num_workers=2,
                   multiprocessing_context="fork")  # fmt: skip
    for x, y in zip(a, b, strict=True):
        assert _same_items(x, y)


def test_object_store_url_downloads_metadata_and_caches_chunks(packed, data_dir, tmp_path):
    """`local:/path` is LitData's stand-in for s3:// etc.: the same download and cache code paths."""
    url = f"local:{packed / 'source'}"
    cache = tmp_path / "cache"
    s = StreamingSplit(url, cache_dir=str(cache))
    assert s.root.is_relative_to(cache / "udass_meta")
    assert {PACK_FILE, STATS_FILE} <= set(os.listdir(s.root))  # statistics next to pack.json, for RCS
    files = FolderDataset(data_dir / "synthetic" / "source")
    for i in (0, len(files) - 1):
        assert all(np.array_equal(a, b) for a, b in zip(files.load(i), s.load(i)))
    cached = [p for p in cache.rglob("chunk-*.bin") if "udass_meta" not in p.parts]
    assert cached and not s.reader().cache._reader.on_demand_bytes  # whole chunks in the node cache
    ranged = StreamingSplit(url, cache_dir=str(tmp_path / "c2"), cache_chunks=False)
    assert np.array_equal(ranged.load(3)[0], files.load(3)[0])
    assert ranged.reader().cache._reader.on_demand_bytes  # item-wise range reads


class _ArrayDataset:
    """Items without files behind them: dicts of arrays, as a video dataset with flows returns."""

    def __init__(self, n: int = 5) -> None:
        rng = np.random.default_rng(0)
        self.data = [
            {
                "image": rng.integers(0, 256, (12, 20, 3), dtype=np.uint8),
                "label": rng.integers(0, 19, (12, 20), dtype=np.uint8),
                "flow": (rng.normal(0, 40, (12, 20, 2)) * 10).astype(np.int16),
                "depth": rng.random((12, 20)).astype(np.float32),
                "prev_label": None,
                "frame": 7 + i,
            }
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.data)

    def load(self, i: int) -> dict:
        return self.data[i]

    def name(self, i: int) -> str:
        return f"clip_{i:03d}"


def test_arrays_of_any_item_round_trip_exactly(tmp_path):
    ds = _ArrayDataset()
    meta = pack_split(ds, tmp_path / "clips", num_workers=1)
    assert meta["stored"] == "arrays" and meta["structure"] == "dict"
    assert dict(zip(meta["fields"], meta["formats"])) == {
        "image": "image", "label": "label", "flow": "npy", "depth": "npy", "prev_label": "none",
        "frame": "json",
    }  # fmt: skip
    pack_split(ds, tmp_path / "clips", num_workers=2, overwrite=True)  # replaces it; two packing processes
    s = StreamingSplit(tmp_path / "clips")
    for i in range(len(ds)):
        a, b = ds.load(i), s.load(i)
        assert a.keys() == b.keys() and s.name(i) == ds.name(i)
        for k in a:
            if isinstance(a[k], np.ndarray):
                assert b[k].dtype == a[k].dtype and np.array_equal(a[k], b[k]), k
            else:
                assert a[k] == b[k], k


def test_pack_and_open_errors_name_the_fix(tmp_path, packed):
    with pytest.raises(FileExistsError, match="--overwrite"):
        pack_split(_ArrayDataset(), packed / "source")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="holds no packed split"):
        pack_split(_ArrayDataset(), tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "thesis.tex").is_file()
    with pytest.raises(ValueError, match="local folder"):
        pack_split(_ArrayDataset(), "s3://bucket/x")
    with pytest.raises(FileNotFoundError, match=r"pack.json does not exist.*scripts/pack_dataset.py"):
        StreamingSplit(tmp_path)
    with pytest.raises(ValueError, match="data.streaming_dir"):
        open_split(None, "source")
    bad = _ArrayDataset()
    bad.data[3] = {**bad.data[3], "prev_label": np.zeros((12, 20), np.uint8)}  # structure changes
    with pytest.raises(Exception, match="first item"):
        pack_split(bad, tmp_path / "bad", num_workers=1)

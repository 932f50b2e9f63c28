"""Streaming video clips (src/data/streaming.py StreamingClipSplit, scripts/pack_dataset.py on a video data
config): tiny synthetic clips packed into LitData chunks read back clip for clip (original file bytes), the
video training stream (rare-class sampling included) and the validation items are the file run's, the
target chunks are packed for one data.interval (a run with another stops with the fix), data.flow.source=dis
packs no flows and computes them from the packed frames, datasets that map their labels pack the arrays,
and a 2-step video run trains from the chunks alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("litdata")  # a guard only: litdata is in the `dev` extra, so this suite runs by default

from scripts.pack_dataset import main as pack_main  # noqa: E402
from src.data.datasets.clip_folder import ClipFolderDataset  # noqa: E402
from src.data.rare_class_sampling import STATS_FILE  # noqa: E402
from src.data.streaming import (  # noqa: E402
    PACK_FILE,
    StreamingClipSplit,
    StreamingSplit,
    pack_clip_split,
)
from src.train import build_datamodule  # noqa: E402
from tests.conftest import FAST_TRAINER, compose_cfg  # noqa: E402
from tests.conftest import TINY_VIDEO as TINY_CLIPS  # noqa: E402

TINY_VIDEO = ["data=synthetic_video", *TINY_CLIPS]
RCS = ["uda.rcs.enabled=true", "uda.rcs.min_pixels=20"]  # rare-class sampling on the 64x128 clips
STREAM = ["data.streaming=true"]


@pytest.fixture(scope="session")
def video_root(video_data_dir) -> Path:
    """The tiny synthetic clips of tests/conftest.py (session-wide)."""
    return video_data_dir


@pytest.fixture(scope="module")
def packed(video_root, tmp_path_factory) -> Path:
    """The tiny clips packed by scripts/pack_dataset.py for data.interval=1 (the default)."""
    out = tmp_path_factory.mktemp("packed") / "synthetic_video"
    assert pack_main([f"paths.data_dir={video_root}", *TINY_VIDEO, "--out", str(out)]) == 0
    return out


def _dm(video_root: Path, *overrides: str):
    cfg = compose_cfg("train", [f"paths.data_dir={video_root}", "paths.output_dir=unused", *TINY_VIDEO,
                                "experiment=tps_synthetic_video", *overrides])  # fmt: skip
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def _assert_same_arrays(a, b) -> None:
    """Two clips (src.data.datasets.clip_folder.Clip) hold the same frames, labels and flows, bit for bit."""
    for kind in ("frames", "labels", "flows"):
        x, y = getattr(a, kind), getattr(b, kind)
        assert x.keys() == y.keys(), kind
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), (kind, k)


def test_packed_clip_splits_hold_the_original_files(packed, video_root):
    root = video_root / "synthetic_video"
    needs = {  # what the video data module reads per split at data.interval=1
        "source": ((0, 1), (0, 1), ((0, 1),)),
        "target": ((0, 1, 2), (), ((0, 1), (1, 2), (0, 2))),
        "val": ((0, 1), (0,), ((0, 1),)),
    }
    for split, (offsets, labels, pairs) in needs.items():
        files = ClipFolderDataset(root / split, labels=split != "target", prev_labels=split == "source")
        s = StreamingClipSplit(packed / split)
        meta = json.loads((packed / split / PACK_FILE).read_text())
        assert (
            meta["kind"] == "clips"
            and meta["stored"] == "files"
            and len(s) == len(files) == meta["num_items"]
        )
        assert meta["clip"]["interval"] == (1 if split == "target" else None)
        assert s.has_labels == files.has_labels and s.prev_labels == files.prev_labels
        for i in range(len(files)):
            a, b = files.load_clip(i, offsets, labels, pairs), s.load_clip(i, offsets, labels, pairs)
            assert a.name == b.name == s.name(i) == files.name(i)
            assert a.frames.keys() == b.frames.keys() and a.labels.keys() == b.labels.keys() == set(labels)
            assert a.flows.keys() == b.flows.keys() == set(pairs)
            _assert_same_arrays(a, b)
            if files.has_labels:
                assert s.label_key(i) == files.label_key(i) and s.index_of(files.label_key(i)) == i
        # the encoded files as they are: the chunks are no bigger than the frames, labels and flows read
        read = sum(files.frame_path(i, k).stat().st_size for i in range(len(files)) for k in offsets)
        read += sum(files.label_path(i, k).stat().st_size for i in range(len(files)) for k in labels)
        read += sum(files.flow_path(i, a, b).stat().st_size for i in range(len(files)) for a, b in pairs)
        chunk_bytes = sum(p.stat().st_size for p in (packed / split).glob("*.bin"))
        assert read <= chunk_bytes < read * 1.1
    # the target clips hold t-3 too (for data.interval=2); an interval-1 pack leaves it and its flows out
    assert "frame3" not in json.loads((packed / "target" / PACK_FILE).read_text())["fields"]
    assert (packed / "source" / STATS_FILE).read_bytes() == (root / "source" / STATS_FILE).read_bytes()


def test_video_training_stream_matches_the_files_with_rare_class_sampling(packed, video_root):
    files = _dm(video_root, *RCS)
    stream = _dm(video_root, *RCS, *STREAM, f"data.streaming_dir={packed}")
    assert isinstance(stream.source, StreamingClipSplit) and isinstance(stream.target, StreamingClipSplit)
    rcs_f, rcs_s = files.rare_class_sampler(), stream.rare_class_sampler()
    assert rcs_s is not None and rcs_s.classes == rcs_f.classes  # statistics read from the packed root
    np.testing.assert_array_equal(rcs_s.probabilities, rcs_f.probabilities)
    ds_f, ds_s = files.train_dataset(rank=1), stream.train_dataset(rank=1)
    for i in range(16):
        a, b = ds_f[i], ds_s[i]
        assert {"img", "img_prev", "gt", "gt_prev", "flow"} <= a["source"].keys()
        assert {"img_k", "img_k_prev", "flow_k", "flow_k_prev", "valid"} <= a["target"].keys()
        assert "flow_kk" not in a["target"]  # TPS reads no t-Δ -> t-Δ-1 flow: neither stream loads it
        assert _same(a, b), i
    vf, vs = next(iter(files.val_dataloader())), next(iter(stream.val_dataloader()))
    assert _same(vf, vs) and vf["name"] == vs["name"]
    # forked data-loader workers open their own LitData reader and read the same stream
    stream.source.load_clip(0, (0,))  # a reader opened in the parent must not be inherited by the workers
    a = DataLoader(ds_f, batch_size=2, sampler=range(4), num_workers=0)
    b = DataLoader(ds_s, batch_size=2, sampler=range(4), num_workers=2, multiprocessing_context="fork")
    for x, y in zip(a, b, strict=True):
        assert _same(x, y)


def test_object_store_url_serves_clips_and_statistics(packed, video_root, tmp_path):
    """`local:/path` stands in for s3:// and co.: pack.json and the rare-class statistics are
    downloaded into the cache (the sampler reads them from ``stats_root``); the chunks cached on first use."""
    s = StreamingClipSplit(f"local:{packed / 'source'}", cache_dir=str(tmp_path / "cache"))
    assert (s.stats_root / STATS_FILE).is_file() and s.stats_root.is_relative_to(tmp_path / "cache")
    files = ClipFolderDataset(video_root / "synthetic_video" / "source", prev_labels=True)
    for i in (0, len(files) - 1):
        _assert_same_arrays(
            files.load_clip(i, (0, 1), (0, 1), ((0, 1),)), s.load_clip(i, (0, 1), (0, 1), ((0, 1),))
        )
    assert [p for p in (tmp_path / "cache").rglob("chunk-*.bin") if "udass_meta" not in p.parts]


def test_target_chunks_are_packed_for_one_interval(packed, video_root, tmp_path):
    with pytest.raises(
        ValueError, match=r"data\.interval=1 .*data\.interval=2.*--interval 2.*data\.interval=1"
    ):
        _dm(video_root, "data.interval=2", *STREAM, f"data.streaming_dir={packed}")
    # --interval 2 packs frames t-2, t-3 and the flows t -> t-2, t-2 -> t-3, t -> t-3: the files' stream
    out = tmp_path / "packed2"
    assert pack_main([f"paths.data_dir={video_root}", *TINY_VIDEO, "--interval", "2", "--out", str(out)]) == 0
    meta = json.loads((out / "target" / PACK_FILE).read_text())
    assert meta["clip"]["interval"] == 2 and meta["clip"]["offsets"] == [0, 1, 2, 3]
    assert {"flow0_1", "flow0_2", "flow2_3", "flow0_3"} == {f for f in meta["fields"] if f.startswith("flow")}
    files = _dm(video_root, "data.interval=2")
    stream = _dm(video_root, "data.interval=2", *STREAM, f"data.streaming_dir={out}")
    ds_f, ds_s = files.train_dataset(), stream.train_dataset()
    assert all(_same(ds_f[i], ds_s[i]) for i in range(6))
    # an image pack is not a clip pack, and the reverse
    with pytest.raises(ValueError, match="holds packed clips.*reads images"):
        StreamingSplit(out / "val")


def test_dis_flows_are_computed_from_the_packed_frames(video_root, tmp_path):
    dis = ["data.flow.source=dis", "data.flow.dis_preset=ultrafast"]
    out = tmp_path / "packed_dis"
    assert pack_main([f"paths.data_dir={video_root}", *TINY_VIDEO, *dis, "--out", str(out)]) == 0
    for split in ("source", "target", "val"):
        meta = json.loads((out / split / PACK_FILE).read_text())
        assert meta["clip"]["flow_source"] == "dis" and not any(f.startswith("flow") for f in meta["fields"])
    files = _dm(video_root, *dis)
    stream = _dm(video_root, *dis, *STREAM, f"data.streaming_dir={out}")
    ds_f, ds_s = files.train_dataset(), stream.train_dataset()
    for i in range(4):
        a, b = ds_f[i], ds_s[i]
        assert a["target"]["flow_k"].abs().sum() > 0  # DIS ran on the frames
        assert _same(a, b), i
    with pytest.raises(ValueError, match=r"packed with data\.flow\.source=dis .*set data\.flow\.source=dis"):
        _dm(video_root, *STREAM, f"data.streaming_dir={out}")


class _MappedClips(ClipFolderDataset):
    """A clip dataset that transforms what it reads (as VIPER / Cityscapes-Seq map ids, SYNTHIA-Seq cuts
    rows): its files are not what it returns, so the arrays are packed."""

    def read_frame(self, path):
        return np.ascontiguousarray(super().read_frame(path)[:-8])

    def read_label(self, path):
        lab = super().read_label(path)[:-8]
        return np.where(lab == 255, 255, 18 - np.minimum(lab, 18)).astype(np.uint8)


def test_datasets_that_transform_their_files_pack_the_arrays(video_root, tmp_path):
    ds = _MappedClips(video_root / "synthetic_video" / "source", prev_labels=True)
    meta = pack_clip_split(ds, tmp_path / "mapped", offsets=(0, 1), label_offsets=(0, 1),
                           flow_pairs=((0, 1),), split="source")  # fmt: skip
    assert meta["stored"] == "files and arrays"
    assert meta["stored_fields"] == ["array", "array", "array", "array", "file"]  # flows are the .npy bytes
    s = StreamingClipSplit(tmp_path / "mapped")
    for i in range(len(ds)):
        a, b = ds.load_clip(i, (0, 1), (0, 1), ((0, 1),)), s.load_clip(i, (0, 1), (0, 1), ((0, 1),))
        assert a.frames[0].shape == (56, 128, 3)
        _assert_same_arrays(a, b)
    with pytest.raises(ValueError, match=r"reads the frame\(s\) t-2 .*pack_dataset\.py"):
        s.verify((0, 1, 2), (0,), ((0, 1),))
    with pytest.raises(KeyError, match="frame t-2"):
        s.load_clip(0, (0, 2))


def test_video_training_streams_the_packed_chunks(packed, video_root, tmp_path):
    """2 steps of UDASS video (TPS, QuadMix with long-tail donors, rare-class sampling, validation) from the
    chunks alone: the files are out of reach."""
    from src.train import train

    run = [f"paths.data_dir={video_root}", f"paths.output_dir={tmp_path / 'run'}", *TINY_VIDEO, *FAST_TRAINER,
           "experiment=udass_synthetic_video", "uda.tps_start=0", "uda.mix.quadmix_start=1",
           "uda.mix.rare_paster.min_pixels=1", *RCS, "trainer.max_steps=2",
           "trainer.val_check_interval=2"]  # fmt: skip
    stream = [*STREAM, f"data.streaming_dir={packed}", f"data.root={tmp_path / 'absent'}"]
    cfg = compose_cfg("train", run + stream)
    out = train(cfg)
    assert out["steps"] == 2 and 0.0 <= out["mIoU"] <= 100.0 and len(out["per_class"]) == 19
    assert json.loads(Path(cfg.paths.output_dir, "results.json").read_text()) == out

"""Streaming data: a prepared dataset packed into LitData chunks, read back item by item.

Our design (issue 8, "streaming data at cluster scale"); LitData (``litdata``, the ``streaming`` extra) is
the storage layer, the sampling stays ours:

- ``scripts/pack_dataset.py`` (:func:`pack_split`) writes each split of a dataset (``source``, ``target``,
  ``val``) with ``litdata.optimize`` into ``<packed root>/<split>/``: ``index.json`` and ``chunk-*.bin``
  files holding, per item, the **original encoded files** (PNG/JPEG image and train-id label bytes, no
  re-encoding: chunks are as small as the dataset) or, for items without files behind them, the arrays
  ``load(i)`` returns, encoded losslessly (uint8 RGB and label maps as PNG, any other array as ``.npy``,
  e.g. int16 optical flows). Next to the chunks: ``pack.json`` (:data:`PACK_FILE`: the item structure,
  names, rare-class keys and the chunk position of every item) and copies of the rare-class statistics
  (``sample_class_stats.json``, ``samples_with_class.json``).
- :class:`StreamingSplit` offers the interface of the file datasets (``root``, ``__len__``, ``load(i)``,
  ``name(i)``, ``label_key(i)``, ``index_of(key)``, ``has_labels``): item ``i`` is item ``i`` of the packed
  dataset, decoded with the same OpenCV calls, so ``data.streaming=true`` feeds the data module the same
  arrays for the same indices. Rare-class sampling (daformer_mic.md §1.7) is unchanged: the sampler draws
  a class and a file from the statistics copied into the packed split, ``index_of`` finds its item, and
  the item is read by random access (``StreamingDataset[j]``); the training stream, a pure function of
  (seed, rank, i), is the one of the non-streaming run, bit for bit.
- Video clips (:func:`pack_clip_split`, :class:`StreamingClipSplit`; ``kind: clips`` in ``pack.json``): one
  item per clip holding what the video data module reads for the split (``VideoUDADataModule.split_needs``):
  frames t, t−1 with their labels and the flow t -> t−1 for source and validation; for the target the frames
  t, t−1, t−Δ, t−Δ−1 and the flows of ``data.interval`` Δ. Frames and labels are the original file bytes
  when the dataset reads them with the plain decoders (clip folders, the synthetic clips), else the arrays it
  returns, PNG-encoded (SYNTHIA-Seq's cut rows, VIPER / Cityscapes label-id mappings); flows are the
  ``int16 × 10`` ``.npy`` file bytes, decoded like ``src.data.flow.read_flow``. ``data.flow.source=dis``
  packs no flows (the workers compute them from the packed frames). Δ and the flow source are recorded; a
  run with another Δ, or reading flows from a pack without them, stops naming both values and the fix.
  ``load_clip(i, offsets, label_offsets, flow_pairs)`` returns the arrays of the file dataset's
  ``load_clip``, so the video training stream is the file run's, bit for bit.
- Sharding across DDP ranks and data-loader workers is the data module's, as without streaming: every rank
  draws its own stream (rank in the seed), the sampler deals the stream's batches to the workers, and
  validation is split by ``ShardSampler``. LitData's own iteration order (chunk-wise shuffling) is not
  used: rare-class sampling needs class-conditional random access, which a sequential chunk stream
  cannot give.

Where the chunks come from (``data.streaming_dir``, one folder per split below it):

- a **local folder** (or a shared file system): chunks are memory-mapped in place, nothing is copied;
- an **object-store URL** (``s3://``, ``gs://``, ``azure://``, ``r2://``, ``hf://``; ``local:/path``
  emulates one): ``data.streaming_cache_chunks=true`` (default) downloads a chunk the first time one of its
  items is read into LitData's node-local cache, ``<cache dir>/<md5 of the URL>/<index.json timestamp>/``,
  where ``<cache dir>`` is ``data.streaming_cache_dir``, else ``$LITDATA_CACHE_DIR``, else
  ``~/.lightning/chunks``. All ranks and workers of a node share it (file locks; a chunk is downloaded once
  per node), later reads are local, and it is kept across runs until the packed data changes (a new
  ``index.json`` timestamp clears the older copy). With random access every chunk is needed sooner or
  later, so the cache grows to the size of the packed split; chunks are evicted only beyond
  ``data.streaming_max_cache_size`` (LitData's default: 75 % of the free disk). ``false`` reads every item
  with HTTP range requests instead (two small requests per item, nothing on disk): for data larger than
  the local disk. ``pack.json`` and the statistics are downloaded at start-up into
  ``<cache dir>/udass_meta/<md5 of the URL>/``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.data.datasets.folder import IMREAD_IMAGE, decode_label
from src.data.rare_class_sampling import SAMPLES_WITH_CLASS_FILE, STATS_FILE

log = logging.getLogger(__name__)

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI request at import or start-up

PACK_FILE = "pack.json"
PACK_VERSION = 1
SPLITS = ("source", "target", "val")
STATS_FILES = (STATS_FILE, SAMPLES_WITH_CLASS_FILE)
INSTALL_HINT = "pip install -e '.[streaming]' (or pip install litdata)"
URL_SCHEMES = ("s3://", "gs://", "azure://", "r2://", "hf://", "local:")

# How a field of an item is stored: the original file bytes or a lossless encoding of the array.
FMT_IMAGE = "image"  # RGB image, encoded bytes (PNG/JPEG), decoded like read_image (cv2, BGR -> RGB)
FMT_LABEL = "label"  # single-channel uint8 map, encoded bytes (PNG), decoded like read_label
FMT_NPY = "npy"  # any other array, np.save bytes
FMT_JSON = "json"  # a str / int / float / bool value
FMT_NONE = "none"  # None for every item (e.g. the label of an unlabelled target split)
FMT_FLOW = "flow"  # an int16 x 10 backward flow: the .npy file bytes, decoded like src.data.flow.read_flow

# What a packed split holds (``kind`` in pack.json): image items (load(i)) or video clips (load_clip).
KIND_IMAGES, KIND_CLIPS = "images", "clips"


def _require_litdata():
    try:
        import litdata
    except ImportError:
        raise ImportError(
            f"data.streaming=true and scripts/pack_dataset.py need LitData, which is not installed: "
            f"{INSTALL_HINT}"
        ) from None
    return litdata


def is_url(path: str | os.PathLike) -> bool:
    """True for an object-store URL (s3://, gs://, ..., local:), False for a local folder."""
    return str(path).startswith(URL_SCHEMES)


def join(root: str | os.PathLike, *parts: str) -> str:
    """Join a local folder or a URL with sub-paths ('/' for URLs)."""
    if is_url(root):
        return "/".join([str(root).rstrip("/"), *parts])
    return str(Path(root, *parts))


# ----------------------------------------------------------------------------------------- encoding
def _field_format(value: Any, where: str) -> str:
    if value is None:
        return FMT_NONE
    if isinstance(value, (str, int, float, bool)):
        return FMT_JSON
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3:
            return FMT_IMAGE
        if value.dtype == np.uint8 and value.ndim == 2:
            return FMT_LABEL
        return FMT_NPY
    raise TypeError(
        f"{where}: cannot pack a {type(value).__name__}; a dataset item must be a tuple or dict of numpy "
        "arrays (or None, str, int, float)"
    )


def encode(value: Any, fmt: str, where: str) -> bytes:
    """Lossless bytes of one field value in format `fmt` (:func:`decode` inverts it)."""
    if fmt == FMT_NONE:
        if value is not None:
            raise ValueError(
                f"{where}: None in the first item but a value here; items must share a structure"
            )
        return b""
    if value is None:
        raise ValueError(f"{where}: None here but a value in the first item; items must share a structure")
    if fmt == FMT_JSON:
        return json.dumps(value).encode()
    arr = np.asarray(value)
    if fmt in (FMT_IMAGE, FMT_LABEL):
        if _field_format(arr, where) != fmt:
            raise ValueError(
                f"{where}: expected a {fmt} array like the first item's, got {arr.dtype} {arr.shape}"
            )
        ok, buf = cv2.imencode(".png", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if fmt == FMT_IMAGE else arr)
        if not ok:
            raise OSError(f"{where}: cannot encode the {fmt} as PNG")
        return buf.tobytes()
    out = io.BytesIO()
    np.save(out, arr, allow_pickle=False)
    return out.getvalue()


def decode(data: bytes, fmt: str, where: str = "") -> Any:
    """The value of a field from its stored bytes (file bytes or :func:`encode` output)."""
    if fmt == FMT_NONE:
        return None
    if fmt == FMT_JSON:
        return json.loads(bytes(data))
    if fmt == FMT_NPY:
        return np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    if fmt == FMT_FLOW:
        return decode_flow(data, where)
    buf = np.frombuffer(data, np.uint8)
    if fmt == FMT_IMAGE:  # as read_image: no EXIF rotation
        img = cv2.imdecode(buf, IMREAD_IMAGE)
        if img is None:
            raise OSError(f"{where}: the packed image bytes cannot be decoded; pack the dataset again")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if fmt == FMT_LABEL:
        lab = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if lab is None or lab.ndim != 2:
            raise OSError(
                f"{where}: the packed label bytes are not a single-channel PNG; pack the dataset again"
            )
        return decode_label(lab, where)  # as read_label: 16-bit values above 255 refused
    raise ValueError(f"{where}: unknown field format {fmt!r} in {PACK_FILE}")


def decode_flow(data: bytes, where: str = "") -> np.ndarray:
    """The bytes of an ``int16 × 10`` ``.npy`` flow file -> float32 H×W×2 pixels, exactly as
    :func:`src.data.flow.read_flow` reads the file (video_uda.md §2.2)."""
    from src.data.flow import load_flow_npy

    return load_flow_npy(io.BytesIO(bytes(data)), where)


def _fields_of(item: Any, where: str) -> tuple[str, list[str], list[Any]]:
    """(structure, field names, values) of one `load(i)` result: a tuple / list or a dict."""
    if isinstance(item, dict):
        return "dict", [str(k) for k in item], list(item.values())
    if isinstance(item, (tuple, list)):
        return "tuple", [f"field{k}" for k in range(len(item))], list(item)
    raise TypeError(f"{where}: load() returned a {type(item).__name__}; expected a tuple or a dict")


def _file_paths(dataset: Any, i: int, n: int) -> list[Path | None] | None:
    """The files behind item i when the dataset lists them as `items[i] = (image path, label path)`."""
    items = getattr(dataset, "items", None)
    if items is None or n != 2:
        return None
    entry = items[i]
    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
        return None
    if not all(p is None or isinstance(p, (str, os.PathLike)) for p in entry):
        return None
    return [None if p is None else Path(p) for p in entry]


class _PackItem:
    """`litdata.optimize` worker function: dataset index -> {"index": i, "f0": bytes, ...} (picklable)."""

    def __init__(self, dataset: Any, structure: str, names: list[str], formats: list[str], raw: bool) -> None:
        self.dataset, self.structure, self.names = dataset, structure, names
        self.formats, self.raw = formats, raw

    def __call__(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"index": int(i)}
        if self.raw:  # the original encoded files, byte for byte
            for k, (p, fmt) in enumerate(zip(_file_paths(self.dataset, i, 2), self.formats)):
                out[f"f{k}"] = b"" if fmt == FMT_NONE else p.read_bytes()
            return out
        where = f"item {i} of {_describe(self.dataset)}"
        structure, names, values = _fields_of(self.dataset.load(i), where)
        if structure != self.structure or names != self.names:
            raise ValueError(f"{where}: fields {names} differ from the first item's {self.names}")
        for k, (v, fmt) in enumerate(zip(values, self.formats)):
            out[f"f{k}"] = encode(v, fmt, f"{where}, field {names[k]!r}")
        return out


def _describe(dataset: Any) -> str:
    return f"{type(dataset).__name__}({getattr(dataset, 'root', '?')})"


# ------------------------------------------------------------------------------------------- packing
def _prepare_out(out_dir: str | Path, overwrite: bool) -> Path:
    """The empty local output folder of a split (an older pack replaced with `overwrite`)."""
    if is_url(out_dir):
        raise ValueError(
            f"pack into a local folder, then copy it to the object store (e.g. `aws s3 sync "
            f"{Path(out_dir).name} s3://bucket/{Path(out_dir).name}`); got the URL {out_dir}"
        )
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty: pass --overwrite to replace it, or choose another --out"
            )
        if not ((out / "index.json").is_file() or (out / PACK_FILE).is_file()):
            raise FileExistsError(f"{out} is not empty and holds no packed split: not deleting it with "
                                  "--overwrite; choose another --out")  # fmt: skip
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_chunks(
    litdata: Any,
    fn: Any,
    n: int,
    out: Path,
    dataset: Any,
    *,
    num_workers: int,
    chunk_bytes: str | int,
    start_method: str | None,
) -> np.ndarray:
    """Run `litdata.optimize` over items 0..n-1; returns the chunk position of every item (the workers'
    chunks do not follow the input order in general)."""
    litdata.optimize(
        fn=fn,
        inputs=list(range(n)),
        output_dir=str(out),
        chunk_bytes=chunk_bytes,
        num_workers=max(int(num_workers), 1),
        reorder_files=False,
        mode="overwrite",
        verbose=False,
        start_method=start_method or ("fork" if sys.platform == "linux" else None),
    )
    index = out / "index.json"
    if not index.is_file() or not json.loads(index.read_text()).get("chunks"):
        raise RuntimeError(
            f"packing {_describe(dataset)} wrote no chunks to {out}; see the worker errors above"
        )
    packed = litdata.StreamingDataset(str(out))
    order = np.full(n, -1, np.int64)
    for j in range(len(packed)):
        order[int(packed[j]["index"])] = j
    if (order < 0).any():
        missing = np.flatnonzero(order < 0)[:5].tolist()
        raise RuntimeError(f"{out}: items {missing} of {_describe(dataset)} are missing from the chunks")
    return order


def _copy_stats(root: str | Path | None, out: Path) -> list[str]:
    """Copy the rare-class statistics found in `root` next to the chunks; returns the copied names."""
    copied = []
    for f in STATS_FILES:
        if root is not None and (Path(root) / f).is_file():
            shutil.copyfile(Path(root) / f, out / f)
            copied.append(f)
    return copied


def pack_split(
    dataset: Any,
    out_dir: str | Path,
    *,
    split: str = "",
    num_workers: int = 1,
    chunk_bytes: str | int = "64MB",
    overwrite: bool = False,
    start_method: str | None = None,
) -> dict[str, Any]:
    """Write `dataset` (``__len__``, ``load(i)``, ``name(i)``, optional ``label_key(i)`` and ``root``) as
    LitData chunks into the local folder `out_dir`, with ``pack.json`` and the rare-class statistics of its
    root. Returns the ``pack.json`` content.

    Items whose dataset lists ``items[i] = (image path, label path | None)`` (the folder and prepared real
    datasets) are stored as the original file bytes, checked on the first item against ``load(0)``; other
    items as the arrays ``load(i)`` returns, losslessly encoded (see the module docstring).
    `start_method` of the packing processes: None = "fork" on Linux (a worker starts in 0.1 s instead of
    the 4-8 s of re-importing torch under "spawn", LitData's default, which other systems keep).
    """
    litdata = _require_litdata()
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{_describe(dataset)} holds no item: nothing to pack")
    out = _prepare_out(out_dir, overwrite)

    first = dataset.load(0)
    where = f"item 0 of {_describe(dataset)}"
    structure, names, values = _fields_of(first, where)
    formats = [_field_format(v, f"{where}, field {nm!r}") for nm, v in zip(names, values)]
    raw = False
    paths = _file_paths(dataset, 0, len(values))
    if (
        paths is not None
        and structure == "tuple"
        and formats[0] == FMT_IMAGE
        and formats[1] in (FMT_LABEL, FMT_NONE)
    ):
        # the stored files must decode to exactly what load() returns (e.g. no id mapping in load())
        decoded = [None if p is None else decode(p.read_bytes(), f, str(p)) for p, f in zip(paths, formats)]
        raw = all((a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
                  for a, b in zip(decoded, values))  # fmt: skip
        if not raw:
            log.info(
                "%s: load() differs from its files; packing the decoded arrays instead", _describe(dataset)
            )
    fn = _PackItem(dataset, structure, names, formats, raw)
    order = _write_chunks(litdata, fn, n, out, dataset, num_workers=num_workers, chunk_bytes=chunk_bytes,
                          start_method=start_method)  # fmt: skip
    has_labels = bool(getattr(dataset, "has_labels", structure == "tuple" and len(formats) > 1
                                                   and formats[1] != FMT_NONE))  # fmt: skip
    keys = [dataset.label_key(i) for i in range(n)] if has_labels and hasattr(dataset, "label_key") else None
    root = getattr(dataset, "root", None)
    copied = _copy_stats(root, out)
    meta = {
        "version": PACK_VERSION,
        "split": split,
        "packed_from": str(root) if root is not None else _describe(dataset),
        "dataset": type(dataset).__name__,
        "num_items": n,
        "structure": structure,
        "fields": names,
        "formats": formats,
        "stored": "files" if raw else "arrays",
        "has_labels": has_labels,
        "names": [str(dataset.name(i)) for i in range(n)],
        "keys": keys,
        "order": order.tolist(),
        "files": copied,
    }
    (out / PACK_FILE).write_text(json.dumps(meta))
    return meta


# ------------------------------------------------------------------------------------- video clips
def frame_field(k: int) -> str:
    """The packed field of frame t−k of a clip."""
    return f"frame{int(k)}"


def label_field(k: int) -> str:
    """The packed field of the label of frame t−k."""
    return f"label{int(k)}"


def flow_field(a: int, b: int) -> str:
    """The packed field of the backward flow t−a -> t−b."""
    return f"flow{int(a)}_{int(b)}"


def _stores_files(dataset: Any, method: str, path: Path, fmt: str) -> bool:
    """True when `dataset.<method>(path)` is the plain decode of the file (no mapping, cut or palette): the
    file's bytes can be packed as they are. Checked on the first clip, like :func:`pack_split`."""
    from src.data.datasets.clip_folder import ClipDataset

    if getattr(type(dataset), method) is not getattr(ClipDataset, method):
        return False  # the dataset transforms what it reads (e.g. VIPER / Cityscapes label ids -> protocol)
    try:
        decoded = decode(path.read_bytes(), fmt, str(path))
    except (OSError, ValueError):
        return False
    read = getattr(dataset, method)(path)
    return decoded.dtype == read.dtype and np.array_equal(decoded, read)


class _PackClip:
    """`litdata.optimize` worker function of a clip dataset: clip index -> {"index": i, "f0": bytes, ...},
    the fields of ``names`` in order (frames, then labels, then flows; picklable)."""

    def __init__(
        self,
        dataset: Any,
        offsets: tuple[int, ...],
        label_offsets: tuple[int, ...],
        flow_pairs: tuple[tuple[int, int], ...],
        raw_frames: bool,
        raw_labels: bool,
    ) -> None:
        self.dataset, self.offsets = dataset, offsets
        self.label_offsets, self.flow_pairs = label_offsets, flow_pairs
        self.raw_frames, self.raw_labels = raw_frames, raw_labels

    def __call__(self, i: int) -> dict[str, Any]:
        ds = self.dataset
        where = f"clip {i} ({ds.name(i)}) of {_describe(ds)}"
        values: list[bytes] = []
        for k in self.offsets:
            path = ds.frame_path(i, k)
            values.append(
                path.read_bytes() if self.raw_frames else encode(ds.read_frame(path), FMT_IMAGE, where)
            )
        for k in self.label_offsets:
            path = ds.label_path(i, k)
            if path is None:
                raise ValueError(f"{where}: no label of frame t-{k}, but the first clip has one; every clip "
                                 "of a split must have the same labelled frames")  # fmt: skip
            values.append(
                path.read_bytes() if self.raw_labels else encode(ds.read_label(path), FMT_LABEL, where)
            )
        for a, b in self.flow_pairs:
            path = ds.flow_path(i, a, b)
            data = path.read_bytes()
            decode_flow(data, str(path))  # the checks of read_flow, here rather than at training time
            values.append(data)
        return {"index": int(i), **{f"f{k}": v for k, v in enumerate(values)}}


def pack_clip_split(
    dataset: Any,
    out_dir: str | Path,
    *,
    offsets: Sequence[int],
    label_offsets: Sequence[int] = (),
    flow_pairs: Sequence[tuple[int, int]] = (),
    interval: int | None = None,
    flow_source: str = "files",
    split: str = "",
    num_workers: int = 1,
    chunk_bytes: str | int = "64MB",
    overwrite: bool = False,
    start_method: str | None = None,
) -> dict[str, Any]:
    """Write the clip dataset `dataset` (src/data/datasets/clip_folder.py) as LitData chunks into the local
    folder `out_dir`: per clip the frames t−k of `offsets`, the labels of `label_offsets` (those the dataset
    has) and the flows of `flow_pairs` — what the video data module reads for this split (see
    ``VideoUDADataModule.split_needs``) — with ``pack.json`` and the rare-class statistics of its
    ``stats_root``. Returns the ``pack.json`` content.

    Frames and labels are the original file bytes when the dataset reads them with the plain decoders
    (checked on the first clip: the clip folder and synthetic clips); otherwise (SYNTHIA-Seq's cut rows,
    VIPER / Cityscapes label-id mappings) the arrays it returns, losslessly PNG-encoded. Flows are the
    ``int16 × 10`` ``.npy`` file bytes. `interval` (Δ of the target clips, None for source and validation)
    and `flow_source` (``dis``: no flows packed) are recorded so that a run with other settings stops with
    the fix (:class:`StreamingClipSplit`).
    """
    litdata = _require_litdata()
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{_describe(dataset)} holds no clip: nothing to pack")
    offsets = tuple(int(k) for k in dict.fromkeys(offsets))
    if 0 not in offsets:
        raise ValueError(f"offsets {offsets} must include 0 (the current frame t)")
    label_offsets = tuple(
        int(k) for k in dict.fromkeys(label_offsets) if dataset.label_path(0, k) is not None
    )
    flow_pairs = tuple((int(a), int(b)) for a, b in dict.fromkeys(tuple(p) for p in flow_pairs))
    dataset.verify(offsets, label_offsets, flow_pairs)  # every file exists, or the error with its fix
    out = _prepare_out(out_dir, overwrite)

    raw_frames = all(
        _stores_files(dataset, "read_frame", dataset.frame_path(0, k), FMT_IMAGE) for k in offsets
    )
    raw_labels = all(_stores_files(dataset, "read_label", dataset.label_path(0, k), FMT_LABEL)
                     for k in label_offsets)  # fmt: skip
    names = ([frame_field(k) for k in offsets] + [label_field(k) for k in label_offsets]
             + [flow_field(a, b) for a, b in flow_pairs])  # fmt: skip
    formats = [FMT_IMAGE] * len(offsets) + [FMT_LABEL] * len(label_offsets) + [FMT_FLOW] * len(flow_pairs)
    stored = (["file" if raw_frames else "array"] * len(offsets) + ["file" if raw_labels else "array"]
              * len(label_offsets) + ["file"] * len(flow_pairs))  # fmt: skip
    fn = _PackClip(dataset, offsets, label_offsets, flow_pairs, raw_frames, raw_labels)
    order = _write_chunks(litdata, fn, n, out, dataset, num_workers=num_workers, chunk_bytes=chunk_bytes,
                          start_method=start_method)  # fmt: skip
    has_labels = bool(dataset.has_labels)
    root = getattr(dataset, "stats_root", getattr(dataset, "root", None))
    kinds = set(stored)
    stored_as = "files and arrays" if len(kinds) > 1 else {"file": "files", "array": "arrays"}[kinds.pop()]
    meta = {
        "version": PACK_VERSION,
        "kind": KIND_CLIPS,
        "split": split,
        "packed_from": str(getattr(dataset, "root", _describe(dataset))),
        "dataset": type(dataset).__name__,
        "num_items": n,
        "structure": "dict",
        "fields": names,
        "formats": formats,
        "stored": stored_as,
        "stored_fields": stored,
        "has_labels": has_labels,
        "names": [str(dataset.name(i)) for i in range(n)],
        "keys": [dataset.label_key(i) for i in range(n)] if has_labels else None,
        "order": order.tolist(),
        "files": _copy_stats(root, out),
        "clip": {
            "dataset": str(getattr(dataset, "dataset", type(dataset).__name__)),
            "title": str(getattr(dataset, "title", type(dataset).__name__)),
            "offsets": list(offsets),
            "label_offsets": list(label_offsets),
            "flow_pairs": [list(p) for p in flow_pairs],
            "interval": None if interval is None else int(interval),
            "flow_source": str(flow_source),
            "prev_labels": bool(getattr(dataset, "prev_labels", False)),
        },
    }
    (out / PACK_FILE).write_text(json.dumps(meta))
    return meta


# ------------------------------------------------------------------------------------------- reading
def _cache_root(cache_dir: str | None) -> str:
    if cache_dir:
        return str(cache_dir)
    from litdata.utilities.dataset_utilities import get_default_cache_dir

    return get_default_cache_dir()


def _fetch(url: str, files: Sequence[str], local_dir: Path, storage_options: dict | None) -> None:
    """Download `url/<file>` for each file into `local_dir` (LitData's downloader of the URL scheme)."""
    from litdata.streaming.downloader import get_downloader

    local_dir.mkdir(parents=True, exist_ok=True)
    downloader = get_downloader(url, str(local_dir), [], storage_options or {})
    for f in files:
        target = local_dir / f
        if target.exists():
            target.unlink()  # always the current version: the packed data may have been replaced
        downloader.download_file(join(url, f), str(target))


class StreamingSplit:
    """One packed split (a local folder or URL written by :func:`pack_split`) with the file datasets'
    interface; item ``i`` is item ``i`` of the dataset that was packed (module docstring).

    Args:
        url: the split's folder or object-store URL (``<data.streaming_dir>/<split>``).
        cache_dir: local cache root for remote chunks (None: ``$LITDATA_CACHE_DIR`` or
            ``~/.lightning/chunks``).
        cache_chunks: remote only: download whole chunks into the cache on first use (True) or read every
            item with range requests (False).
        max_cache_size: cache budget (e.g. ``"200GB"``); None: LitData's default (75 % of the free disk).
        storage_options: passed to LitData's object-store client (e.g. ``{"endpoint_url": ...}``).
        key: the config key naming the folder, for error messages.
    """

    kind: str = KIND_IMAGES

    def __init__(
        self,
        url: str | os.PathLike,
        *,
        cache_dir: str | None = None,
        cache_chunks: bool = True,
        max_cache_size: str | int | None = None,
        storage_options: dict | None = None,
        key: str = "data.streaming_dir",
    ) -> None:
        _require_litdata()
        self.url = str(url)
        self.cache_dir, self.cache_chunks = cache_dir, bool(cache_chunks)
        self.max_cache_size = max_cache_size
        self.storage_options = dict(storage_options or {})
        self.remote = is_url(self.url)
        hint = (f"pack it with `python scripts/pack_dataset.py <the data overrides of this run>` (it writes "
                f"{PACK_FILE}, index.json and the chunks), or point {key} at a packed root")  # fmt: skip
        if self.remote:
            digest = hashlib.md5(self.url.encode()).hexdigest()
            self.root = Path(_cache_root(cache_dir), "udass_meta", digest)
            try:
                _fetch(self.url, [PACK_FILE], self.root, self.storage_options)
            except Exception as e:  # noqa: BLE001 - one readable message with the URL
                raise FileNotFoundError(
                    f"{key}: cannot read {join(self.url, PACK_FILE)} ({type(e).__name__}: {e}); {hint}"
                ) from None
        else:
            self.root = Path(self.url)
            if not (self.root / PACK_FILE).is_file():
                raise FileNotFoundError(f"{key}: {self.root / PACK_FILE} does not exist; {hint}")
        meta_path = self.root / PACK_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as e:
            raise ValueError(
                f"{join(self.url, PACK_FILE)} is not valid JSON ({e}); pack the split again"
            ) from None
        if meta.get("version") != PACK_VERSION:
            raise ValueError(
                f"{join(self.url, PACK_FILE)} has pack format {meta.get('version')!r}, this library reads "
                f"{PACK_VERSION}: pack the split again with scripts/pack_dataset.py"
            )
        if meta.get("kind", KIND_IMAGES) != self.kind:
            raise ValueError(
                f"{join(self.url, PACK_FILE)} holds packed {meta.get('kind', KIND_IMAGES)} (packed from "
                f"{meta.get('packed_from')}), but this run reads {self.kind}: pack this run's data with "
                f"`python scripts/pack_dataset.py <the data overrides of this run>` and point {key} at it"
            )
        if self.remote and meta.get("files"):
            _fetch(self.url, meta["files"], self.root, self.storage_options)  # rare-class statistics
        self.meta = meta
        self.structure, self.fields, self.formats = meta["structure"], meta["fields"], meta["formats"]
        self.has_labels = bool(meta["has_labels"])
        self._names: list[str] = meta["names"]
        self._order: list[int] = meta["order"]
        keys = meta.get("keys")
        self._index = {k: i for i, k in enumerate(keys)} if keys else {}
        self._keys = keys
        self._ds = None
        self._pid = -1
        log.info("streaming %d items from %s (packed from %s)", len(self), self.url, meta["packed_from"])

    def __getstate__(self) -> dict[str, Any]:  # data-loader workers open their own LitData reader
        state = self.__dict__.copy()
        state["_ds"], state["_pid"] = None, -1
        return state

    def __len__(self) -> int:
        return len(self._order)

    def name(self, i: int) -> str:
        return self._names[i]

    def label_key(self, i: int) -> str:
        """The key of item i in the rare-class statistics (the label path relative to the packed root)."""
        return self._keys[i] if self._keys else ""

    def index_of(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(
                f"rare-class statistics name {key!r}, which is not an item of the packed split {self.url}: "
                "the statistics and the chunks are from different datasets; pack the split again"
            ) from None

    def reader(self):
        """This process's ``litdata.StreamingDataset`` (opened on first use in each process)."""
        if self._ds is None or self._pid != os.getpid():
            from litdata import StreamingDataset

            # batch_decode=0: deserialise the one item read (LitData's default decodes a window of up to 256
            # items around it, made for sequential reads: 3x slower per random read here).
            ds = StreamingDataset(self.url, cache_dir=self.cache_dir, max_cache_size=self.max_cache_size,
                                  storage_options=self.storage_options or None, batch_decode=0)  # fmt: skip
            # Random access (dataset[j]) reads remote items with range requests unless told to cache whole
            # chunks; the public setter needs the reader, which LitData builds on the first read.
            ds._on_demand_bytes = not self.cache_chunks
            self._ds, self._pid = ds, os.getpid()
        return self._ds

    def _item(self, i: int) -> dict[str, Any]:
        """The stored fields of item i (``{"index": i, "f0": bytes, ...}``), read by random access."""
        if not 0 <= i < len(self._order):
            raise IndexError(f"item {i} is out of range for the {len(self)} items of {self.url}")
        raw = self.reader()[self._order[i]]
        if int(raw["index"]) != i:
            raise RuntimeError(
                f"{self.url}: chunk position {self._order[i]} holds item {raw['index']}, not {i}; "
                f"{PACK_FILE} does not match the chunks: pack the split again"
            )
        return raw

    def load(self, i: int) -> Any:
        """Item i as the packed dataset's ``load(i)`` returned it: ``(image, label | None)`` for the image
        datasets, or the packed tuple / dict of arrays."""
        raw = self._item(i)
        where = f"{self.url} item {i} ({self._names[i]})"
        values = [decode(raw[f"f{k}"], fmt, where) for k, fmt in enumerate(self.formats)]
        if self.structure == "dict":
            return dict(zip(self.fields, values))
        return tuple(values)


class StreamingClipSplit(StreamingSplit):
    """A packed *clip* split (written by :func:`pack_clip_split`) with the clip datasets' interface
    (``load_clip``, ``verify``, ``index_of``, ``label_key``, ``stats_root``, ``name``, ``__len__``,
    ``has_labels``, ``prev_labels``): clip ``i`` is clip ``i`` of the packed dataset and ``load_clip``
    returns the arrays the dataset's ``load_clip`` returns, so the video training stream is the file run's.

    ``interval`` / ``flow_source``: the run's ``data.interval`` and ``data.flow.source``; a target split
    packed for another Δ, or without flows for a run that reads them, stops here with both values and the
    fix.
    """

    kind = KIND_CLIPS

    def __init__(
        self,
        url: str | os.PathLike,
        *,
        interval: int | None = None,
        flow_source: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        clip = self.meta["clip"]
        self.offsets = tuple(int(k) for k in clip["offsets"])
        self.label_offsets = tuple(int(k) for k in clip["label_offsets"])
        self.flow_pairs = tuple((int(a), int(b)) for a, b in clip["flow_pairs"])
        self.interval = clip.get("interval")
        self.flow_source = clip["flow_source"]
        self.prev_labels = bool(clip["prev_labels"]) and self.has_labels
        self.dataset = clip["dataset"]
        self.title = f"packed {clip['title']}"
        self.split = self.meta.get("split", "")
        self._field = {name: k for k, name in enumerate(self.fields)}
        pack = join(self.url, PACK_FILE)
        if interval is not None and self.interval is not None and int(interval) != int(self.interval):
            d = int(self.interval)
            raise ValueError(
                f"{pack}: the target clips were packed for data.interval={d} (frames t, t-1, t-{d}, "
                f"t-{d + 1} and their flows), but this run has data.interval={int(interval)}: pack them "
                f"again with `python scripts/pack_dataset.py <the data overrides of this run> --interval "
                f"{int(interval)} --overwrite`, or set data.interval={d}"
            )
        if flow_source == "files" and self.flow_source != "files":
            raise ValueError(
                f"{pack}: the clips were packed with data.flow.source={self.flow_source} (no flows in the "
                f"chunks), but this run reads flows (data.flow.source=files): set data.flow.source="
                f"{self.flow_source} (flows computed in the data workers), or pack again with "
                "data.flow.source=files"
            )

    @property
    def stats_root(self) -> Path:
        """The folder holding the rare-class statistics copied next to the chunks (or their download)."""
        return self.root

    def verify(
        self,
        offsets: Sequence[int],
        label_offsets: Sequence[int] = (),
        flow_pairs: Sequence[tuple[int, int]] = (),
        *,
        max_report: int = 5,
    ) -> None:
        """Check that the chunks hold every frame, label and flow the run reads (what the clip datasets'
        ``verify`` checks of the files); one error naming what is missing and the fix."""
        kinds = (
            ("frame", sorted(set(offsets) - set(self.offsets)), self.offsets, "t-{}"),
            ("label", sorted(set(label_offsets) - set(self.label_offsets)), self.label_offsets, "t-{}"),
            ("flow", sorted({tuple(p) for p in flow_pairs} - set(self.flow_pairs)), self.flow_pairs, "{}"),
        )
        for kind, missing, packed, fmt in kinds:
            if missing:
                shown = ", ".join(fmt.format(m) for m in missing[:max_report])
                raise ValueError(
                    f"{join(self.url, PACK_FILE)}: this run reads the {kind}(s) {shown} of every clip, which "
                    f"are not in the chunks (packed: {', '.join(fmt.format(p) for p in packed) or 'none'}; "
                    f"packed with data.flow.source={self.flow_source}); pack the split again with the data "
                    "overrides of this run: python scripts/pack_dataset.py <overrides> --overwrite"
                )

    def _decode_field(self, raw: dict[str, Any], name: str, i: int, what: str) -> Any:
        k = self._field.get(name)
        if k is None:
            raise KeyError(
                f"{self.url}: {what} of clip {i} ({self._names[i]}) is not in the chunks (packed: "
                f"{self.fields}); pack the split again with the data overrides of this run"
            )
        return decode(raw[f"f{k}"], self.formats[k], f"{self.url} clip {i} ({self._names[i]}) {what}")

    def load_clip(
        self,
        i: int,
        offsets: Sequence[int],
        label_offsets: Sequence[int] = (),
        flow_pairs: Sequence[tuple[int, int]] = (),
    ) -> Any:
        """Clip i as the packed dataset's ``load_clip`` returns it: frames t−k for ``offsets``, the labels
        of ``label_offsets`` that were packed (the frames the dataset has labels of) and the flows of
        ``flow_pairs``; each field decoded once."""
        from src.data.datasets.clip_folder import Clip

        raw = self._item(i)
        frames = {
            k: self._decode_field(raw, frame_field(k), i, f"frame t-{k}") for k in dict.fromkeys(offsets)
        }
        labels = {k: self._decode_field(raw, label_field(k), i, f"label t-{k}")
                  for k in dict.fromkeys(label_offsets) if k in self.label_offsets}  # fmt: skip
        flows = {}
        for a, b in dict.fromkeys(tuple(p) for p in flow_pairs):
            flows[(a, b)] = self._decode_field(raw, flow_field(a, b), i, f"flow t-{a} -> t-{b}")
        return Clip(name=self._names[i], frames=frames, labels=labels, flows=flows)


def open_split(
    streaming_dir: str | os.PathLike | None,
    split: str,
    *,
    key: str = "data.streaming_dir",
    **kwargs: Any,
) -> StreamingSplit:
    """The packed split `split` (source, target or val) under `streaming_dir` (a folder or URL)."""
    if not streaming_dir:
        raise ValueError(
            f"data.streaming=true needs {key}=<folder or URL written by scripts/pack_dataset.py>; "
            f"{key} is not set"
        )
    return StreamingSplit(join(streaming_dir, split), key=key, **kwargs)


def open_clip_split(
    streaming_dir: str | os.PathLike | None,
    split: str,
    *,
    interval: int | None = None,
    flow_source: str | None = None,
    key: str = "data.streaming_dir",
    **kwargs: Any,
) -> StreamingClipSplit:
    """The packed clip split `split` (source, target or val) under `streaming_dir` (a folder or URL)."""
    if not streaming_dir:
        raise ValueError(
            f"data.streaming=true needs {key}=<folder or URL written by scripts/pack_dataset.py>; "
            f"{key} is not set"
        )
    return StreamingClipSplit(join(streaming_dir, split), interval=interval, flow_source=flow_source, key=key,
                              **kwargs)  # fmt: skip

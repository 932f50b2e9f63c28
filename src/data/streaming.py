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
    buf = np.frombuffer(data, np.uint8)
    if fmt == FMT_IMAGE:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"{where}: the packed image bytes cannot be decoded; pack the dataset again")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if fmt == FMT_LABEL:
        lab = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if lab is None or lab.ndim != 2:
            raise OSError(
                f"{where}: the packed label bytes are not a single-channel PNG; pack the dataset again"
            )
        return lab.astype(np.uint8, copy=False)
    raise ValueError(f"{where}: unknown field format {fmt!r} in {PACK_FILE}")


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
    out = Path(out_dir)
    if is_url(out_dir):
        raise ValueError(
            f"pack into a local folder, then copy it to the object store (e.g. `aws s3 sync {out.name} "
            f"s3://bucket/{out.name}`); got the URL {out_dir}"
        )
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{_describe(dataset)} holds no item: nothing to pack")
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
    litdata.optimize(
        fn=_PackItem(dataset, structure, names, formats, raw),
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
    # Where each dataset item landed (the workers' chunks do not follow the input order in general).
    packed = litdata.StreamingDataset(str(out))
    order = np.full(n, -1, np.int64)
    for j in range(len(packed)):
        order[int(packed[j]["index"])] = j
    if (order < 0).any():
        missing = np.flatnonzero(order < 0)[:5].tolist()
        raise RuntimeError(f"{out}: items {missing} of {_describe(dataset)} are missing from the chunks")
    has_labels = bool(getattr(dataset, "has_labels", structure == "tuple" and len(formats) > 1
                                                   and formats[1] != FMT_NONE))  # fmt: skip
    keys = [dataset.label_key(i) for i in range(n)] if has_labels and hasattr(dataset, "label_key") else None
    root = getattr(dataset, "root", None)
    copied = []
    for f in STATS_FILES:
        if root is not None and (Path(root) / f).is_file():
            shutil.copyfile(Path(root) / f, out / f)
            copied.append(f)
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

    def load(self, i: int) -> Any:
        """Item i as the packed dataset's ``load(i)`` returned it: ``(image, label | None)`` for the image
        datasets, or the packed tuple / dict of arrays."""
        if not 0 <= i < len(self._order):
            raise IndexError(f"item {i} is out of range for the {len(self)} items of {self.url}")
        raw = self.reader()[self._order[i]]
        if int(raw["index"]) != i:
            raise RuntimeError(
                f"{self.url}: chunk position {self._order[i]} holds item {raw['index']}, not {i}; "
                f"{PACK_FILE} does not match the chunks: pack the split again"
            )
        where = f"{self.url} item {i} ({self._names[i]})"
        values = [decode(raw[f"f{k}"], fmt, where) for k, fmt in enumerate(self.formats)]
        if self.structure == "dict":
            return dict(zip(self.fields, values))
        return tuple(values)


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

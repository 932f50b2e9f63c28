"""The reader base and the preparation worker shared by the real datasets (GTA5, SYNTHIA, Cityscapes).

Training reads *prepared* train-id labels only (written once by ``scripts/prepare_data.py``), so no id
mapping happens in the data loader (DAFormer ``tools/convert_datasets/*.py``, daformer_mic.md §1.7, §6).

Start-up checks (our design, daformer_mic.md §8 pain point 7): building a dataset object checks the root,
the image folder, the prepared labels and (for a labelled training split) the rare-class statistics, and
raises one ``FileNotFoundError`` that names the path and the command that fixes it. The UDA data module
builds the datasets in ``setup()``, in the main process, so the message is not buried in a data-loader
worker's trace. A corrupt file met later names the file (``read_image`` / ``read_label``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from src.data.datasets.folder import IMREAD_IMAGE, load_pair
from src.data.rare_class_sampling import STATS_FILE

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"


def prepare_command(dataset: str, root: str | Path) -> str:
    """The command that writes the train-id labels, statistics and manifest of a dataset root."""
    return f"python scripts/prepare_data.py {dataset} {root}"


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """``ROOT/manifest.json`` written by scripts/prepare_data.py, or None when absent."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and run the preparation again") from None


class PreparedDataset:
    """Image / prepared train-id label pairs of a real dataset (the interface the UDA data module uses).

    Subclasses list their images and prepared labels (:meth:`_find_images`, :meth:`_find_labels`); this
    class checks them at construction (our design: one actionable ``FileNotFoundError`` naming the path and
    the ``scripts/prepare_data.py`` command) and offers ``root``, ``__len__``, ``load(i)``, ``name(i)``,
    ``label_key(i)`` (the label path relative to ``root``, as in ``sample_class_stats.json``) and
    ``index_of(key)``. Images the preparation skipped (listed in ``ROOT/manifest.json``: unreadable, or
    without a label) are left out with a warning; any other image without a prepared label is an error.
    """

    dataset: ClassVar[str] = ""  # argument of scripts/prepare_data.py
    # scripts/prepare_data.py wrote every label through a map to the 19 train ids (others -> 255)
    checked_num_classes: ClassVar[int | None] = 19
    title: ClassVar[str] = ""
    layout: ClassVar[str] = ""  # the release layout, for messages
    split: str = "train"  # the manifest split this object reads

    def __init__(self, root: str | Path, *, labels: bool = True, require_stats: bool = False) -> None:
        self.root = Path(root)
        self.has_labels = labels
        self.command = prepare_command(self.dataset, self.root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.title} root {self.root} does not exist. Put the original release there "
                f"({self.layout}), or point paths.data_dir (the DATA_ROOT environment variable) at the "
                f"folder that holds {self.root.name}/; then run `{self.command}`"
            )
        images = self._find_images()
        manifest = read_manifest(self.root)
        skipped = self._skipped(manifest)
        excluded = sorted(k for k in images if k in skipped)
        if excluded:
            log.warning(
                "%s: leaving out %d image(s) the preparation skipped (see %s), e.g. %s",
                self.title, len(excluded), self.root / MANIFEST_FILE, excluded[:5],
            )  # fmt: skip
        names = sorted(k for k in images if k not in skipped)
        if not names:
            raise FileNotFoundError(f"{self.title}: no usable image under {self.root} ({self.layout})")
        self.items: list[tuple[Path, Path | None]]
        if labels:
            found = self._find_labels()
            missing = [k for k in names if k not in found]
            if missing:
                raise self._missing_labels(missing, names, images)
            self.items = [(images[k], found[k]) for k in names]
            if require_stats and not (self.root / STATS_FILE).is_file():
                raise FileNotFoundError(
                    f"{self.title}: the rare-class statistics {self.root / STATS_FILE} do not exist "
                    f"(the preparation did not finish). Run `{self.command}`"
                )
        else:
            self.items = [(images[k], None) for k in names]
        self._names = names
        self._index = {self.label_key(i): i for i in range(len(self.items))} if labels else {}

    # -- subclass hooks --------------------------------------------------------------------------------
    def _find_images(self) -> dict[str, Path]:
        """{name: image path}; raises FileNotFoundError when the image folder is missing."""
        raise NotImplementedError

    def _find_labels(self) -> dict[str, Path]:
        """{name: prepared train-id label path} of the labels that exist."""
        raise NotImplementedError

    def _expected_label(self, name: str, image: Path) -> Path:
        """Where the prepared label of image `name` (at path `image`) belongs."""
        raise NotImplementedError

    def _label_hint(self) -> str:
        return "prepared train-id label"

    def _missing_labels(
        self, missing: list[str], names: list[str], images: dict[str, Path]
    ) -> FileNotFoundError:
        """The error for images without a label (here: labels the preparation has not written)."""
        what = "are not prepared" if len(missing) == len(names) else "are only partly prepared"
        examples = [str(self._expected_label(k, images[k])) for k in missing[:3]]
        return FileNotFoundError(
            f"{self.title} train-id labels {what}: {len(missing)} of {len(names)} image(s) have no "
            f"{self._label_hint()}, e.g. {examples}. Run `{self.command}`"
        )

    def _skipped(self, manifest: dict[str, Any] | None) -> set[str]:
        """Names of the images the preparation skipped (all of them when labelled, unreadable images only
        when unlabelled)."""
        if not manifest:
            return set()
        entries = manifest.get("splits", {}).get(self.split, {}).get("skipped", [])
        return {e["name"] for e in entries if self.has_labels or e.get("reason") == "unreadable image"}

    def _missing_dir(self, path: Path, what: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"{self.title}: no folder {path} ({what}). {self.root} must hold the original release "
            f"layout ({self.layout}); then run `{self.command}`"
        )

    # -- dataset interface -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        return self._names[i]

    def label_key(self, i: int) -> str:
        """The prepared label path relative to the root, as written in the rare-class statistics."""
        lab = self.items[i][1]
        return lab.relative_to(self.root).as_posix() if lab is not None else ""

    def index_of(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(
                f"the rare-class statistics in {self.root} name {key!r}, which is not a prepared label of "
                f"this dataset: the statistics are stale. Run `{self.command}` again"
            ) from None

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return load_pair(*self.items[i], fix=f"run `{self.command}` again (it resizes such labels)")


def prepare_pair(
    job: tuple[str, str, str | None, str],
    *,
    read_raw_label: Callable[[str], np.ndarray],
    to_train_ids: Callable[[np.ndarray], np.ndarray],
    num_classes: int = 19,
) -> dict[str, Any]:
    """Check one image / raw-label pair, write its train-id PNG and count its classes (prepare_data worker).

    ``job`` = (name, image path, raw label path or None, output path). The image is decoded in full (an
    unreadable file is reported, not skipped silently). A label whose size differs from its image (a few
    GTA5 frames, daformer_mic.md §6 "GTA5 quirks") is resized to the image size with nearest-neighbour
    interpolation and reported as ``resized``. Class counts are taken on the written label (full resolution,
    as the reference RCS statistics, §1.7). Returns ``{"name", "status", "message", "image_size",
    "label_size", "counts"}`` with status ``ok | resized | no label | unreadable image | unreadable label``.
    """
    name, image_path, raw_path, out_path = job
    rec: dict[str, Any] = {"name": name, "status": "ok", "message": "", "image_size": None,
                           "label_size": None, "counts": {}}  # fmt: skip
    try:
        image = cv2.imread(image_path, IMREAD_IMAGE)  # as training reads it: no EXIF rotation
    except cv2.error:
        image = None
    if image is None:
        return {**rec, "status": "unreadable image", "message": f"cannot decode image {image_path}"}
    h, w = image.shape[:2]
    rec["image_size"] = [w, h]
    if raw_path is None:
        return {**rec, "status": "no label", "message": f"image {image_path} has no label"}
    try:
        train_ids = to_train_ids(read_raw_label(raw_path))
    except Exception as e:  # any decoder error is reported with the file's name
        return {**rec, "status": "unreadable label", "message": f"cannot read label {raw_path}: {e}"}
    lh, lw = train_ids.shape[:2]
    rec["label_size"] = [lw, lh]
    if (lh, lw) != (h, w):
        train_ids = cv2.resize(train_ids, (w, h), interpolation=cv2.INTER_NEAREST)
        rec["status"] = "resized"
        rec["message"] = f"label {raw_path} is {lw}x{lh}, image is {w}x{h}: label resized (nearest)"
    ok, buf = cv2.imencode(".png", train_ids)
    if not ok:
        raise OSError(f"cannot encode the train-id label of {raw_path}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, out)  # atomic: an interrupted run leaves no half-written label
    hist = np.bincount(train_ids.ravel(), minlength=256)
    rec["counts"] = {int(c): int(hist[c]) for c in range(num_classes) if hist[c] > 0}
    return rec


class FlatPreparedDataset(PreparedDataset):
    """A dataset whose frames sit in one flat image folder with same-stem labels (GTA5, SYNTHIA): every
    frame, no split. Subclasses set the folders: `image_dir`, `raw_label_dir` (release labels) and
    `label_dir` (prepared train ids). ``require_stats`` (default True) checks ``ROOT/sample_class_stats.json``
    at start-up, which rare-class sampling reads; the preparation always writes it."""

    image_dir: ClassVar[str] = "images"
    raw_label_dir: ClassVar[str] = "labels"
    label_dir: ClassVar[str] = "labels_trainids"

    def __init__(self, root: str | Path, *, labels: bool = True, require_stats: bool = True) -> None:
        super().__init__(root, labels=labels, require_stats=require_stats and labels)

    def _find_images(self) -> dict[str, Path]:
        d = self.root / self.image_dir
        if not d.is_dir():
            raise self._missing_dir(d, "the RGB frames of the release")
        return {p.stem: p for p in sorted(d.glob("*.png"))}

    def _find_labels(self) -> dict[str, Path]:
        d = self.root / self.label_dir
        return {p.stem: p for p in d.glob("*.png")} if d.is_dir() else {}

    def _expected_label(self, name: str, image: Path) -> Path:
        return self.root / self.label_dir / f"{name}.png"

    def _label_hint(self) -> str:
        return f"train-id label in {self.root / self.label_dir}"

    @classmethod
    def jobs(cls, root: str | Path) -> tuple[list[tuple[str, str, str | None, str]], list[str]]:
        """Preparation jobs (name, image, raw label or None, output), and raw labels without an image."""
        root = Path(root)
        images = {p.stem: p for p in sorted((root / cls.image_dir).glob("*.png"))}
        raws = {p.stem: p for p in sorted((root / cls.raw_label_dir).glob("*.png"))}
        out = root / cls.label_dir
        jobs = [
            (n, str(p), str(raws[n]) if n in raws else None, str(out / f"{n}.png")) for n, p in images.items()
        ]
        return jobs, [str(raws[n]) for n in sorted(set(raws) - set(images))]

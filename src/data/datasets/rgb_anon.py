"""The reader base of ETH Zurich's adverse-condition releases, ACDC and Dark Zurich, read as downloaded.

Both releases store anonymised RGB frames and (where released) Cityscapes train-id labels in mirrored trees
of sequence folders (MIC ``seg/mmseg/datasets/acdc.py`` / ``dark_zurich.py``: ``img_suffix='_rgb_anon.png'``,
``seg_map_suffix='_gt_labelTrainIds.png'``)::

    <images>/<sequence>/<sequence>_frame_<n>_rgb_anon.png          RGB, 1920x1080
    <labels>/<sequence>/<sequence>_frame_<n>_gt_labelTrainIds.png  train ids (uint8, 255 = ignore), released

A dataset is a list of :class:`Group` s (an ACDC condition of a split, a Dark Zurich time of day) whose image
folders are read in place: no flattening (MIC's README rsyncs ACDC into ``split/``; we do not need to).
The labels are read as released (the releases ship ``*_gt_labelTrainIds.png``), so the preparation
(``scripts/prepare_data.py acdc|dark_zurich ROOT``) writes no label: it checks every pair (:func:`check_pair`:
both files decode, same size, ids in 0..18 or 255), writes ``ROOT/manifest.json`` and, for a labelled
training split, the rare-class statistics. A reader needs that manifest (the pairs it reads were checked),
and leaves out the pairs the preparation skipped, as for the other real datasets
(``src/data/datasets/prepared.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import cv2
import numpy as np

from src.data.datasets.folder import IMREAD_IMAGE
from src.data.datasets.prepared import MANIFEST_FILE, PreparedDataset, read_manifest

IMAGE_SUFFIX = "_rgb_anon.png"
LABEL_SUFFIX = "_gt_labelTrainIds.png"
NUM_CLASSES = 19
IGNORE = 255


class Group(NamedTuple):
    """One folder of sequence folders: ``name`` (a condition / time of day), its ``images`` folder, the
    mirrored ``labels`` folder (None where the release has no labels) and ``what`` (the release part that
    holds it, for messages)."""

    name: str
    images: Path
    labels: Path | None
    what: str


def find_images(group: Group) -> dict[str, Path]:
    """{``<group>/<sequence>/<stem>``: image path} of a group's ``<sequence>/*_rgb_anon.png`` files."""
    out = {}
    for p in sorted(group.images.glob(f"*/*{IMAGE_SUFFIX}")):
        out[f"{group.name}/{p.parent.name}/{p.name[: -len(IMAGE_SUFFIX)]}"] = p
    return out


def label_path(group: Group, image: Path) -> Path | None:
    """Where the released train-id label of ``image`` is (None for an unlabelled group)."""
    if group.labels is None:
        return None
    return group.labels / image.parent.name / f"{image.name[: -len(IMAGE_SUFFIX)]}{LABEL_SUFFIX}"


def check_pair(job: tuple[str, str, str | None, bool]) -> dict[str, Any]:
    """Check one released pair (scripts/prepare_data.py worker): ``job`` = (name, image, label path or None,
    labelled). The image is decoded in full; a labelled pair's label must be a single-channel 8-bit PNG of
    the image's size holding train ids 0..18 or 255. Returns the record of ``prepare_pair``
    (``src/data/datasets/prepared.py``) with status ``ok | no label | unreadable image | unreadable label |
    bad label``; class counts are taken on the label as released (full resolution, daformer_mic.md §1.7)."""
    name, image_path, lab_path, labelled = job
    rec: dict[str, Any] = {"name": name, "status": "ok", "message": "", "image_size": None,
                           "label_size": None, "counts": {}}  # fmt: skip
    try:
        image = cv2.imread(image_path, IMREAD_IMAGE)
    except cv2.error:
        image = None
    if image is None:
        return {**rec, "status": "unreadable image", "message": f"cannot decode image {image_path}"}
    h, w = image.shape[:2]
    rec["image_size"] = [w, h]
    if not labelled:
        return rec
    if lab_path is None or not Path(lab_path).is_file():
        return {**rec, "status": "no label", "message": f"image {image_path} has no label {lab_path}"}
    try:
        lab = cv2.imread(lab_path, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        lab = None
    if lab is None:
        return {**rec, "status": "unreadable label", "message": f"cannot decode label {lab_path}"}
    if lab.ndim != 2 or lab.dtype != np.uint8:
        kind = f"{lab.shape[2]}-channel" if lab.ndim == 3 else f"{lab.dtype}"
        msg = f"label {lab_path} is a {kind} image, not a single-channel 8-bit train-id PNG"
        return {**rec, "status": "bad label", "message": msg}
    rec["label_size"] = [lab.shape[1], lab.shape[0]]
    if lab.shape != (h, w):
        msg = f"label {lab_path} is {lab.shape[1]}x{lab.shape[0]}, image {image_path} is {w}x{h}"
        return {**rec, "status": "bad label", "message": msg}
    hist = np.bincount(lab.ravel(), minlength=256)
    bad = [v for v in range(NUM_CLASSES, 256) if hist[v] and v != IGNORE]
    if bad:
        return {**rec, "status": "bad label",
                "message": f"label {lab_path} holds ids {bad[:6]} outside the train ids 0..18 and 255: it is "
                           f"not a *{LABEL_SUFFIX} file"}  # fmt: skip
    rec["counts"] = {c: int(hist[c]) for c in range(NUM_CLASSES) if hist[c] > 0}
    return rec


class ReleaseDataset(PreparedDataset):
    """Pairs of a release read in place from its :class:`Group` s (subclasses: :meth:`groups`).

    ``split`` selects the split, ``selection`` the groups (conditions / times of day); ``labels`` whether the
    released labels are read (the target domain reads none). The reader needs ``ROOT/manifest.json`` of
    ``scripts/prepare_data.py`` covering the split and groups it reads.
    """

    split_names: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    selection_key: ClassVar[str] = ""  # the data config key of the selection, for messages

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        selection: list[str] | tuple[str, ...] | str | None = None,
        labels: bool = True,
        require_stats: bool = False,
    ) -> None:
        if split not in self.split_names:
            raise ValueError(f"{self.title}: split={split!r} is not one of {', '.join(self.split_names)}")
        self.split = split
        self.root = Path(root)
        self._groups = self.groups(self.root, split, selection)
        if labels and any(g.labels is None for g in self._groups):
            raise ValueError(
                f"{self.title} {split} has no released labels ({', '.join(g.name for g in self._groups)}): "
                f"read it as an unlabelled target (labels: false)"
            )
        super().__init__(root, labels=labels, require_stats=require_stats)
        self._check_manifest()

    # -- subclass hook ---------------------------------------------------------------------------------
    @classmethod
    def groups(
        cls, root: Path, split: str, selection: list[str] | tuple[str, ...] | str | None
    ) -> list[Group]:
        """The groups of ``split`` (a selection of conditions / times of day, None = the default)."""
        raise NotImplementedError

    @classmethod
    def _selection(
        cls,
        selection: list[str] | tuple[str, ...] | str | None,
        allowed: tuple[str, ...],
        default: tuple[str, ...],
    ) -> list[str]:
        """A selection as a list of known names (a single name may be given as a string)."""
        chosen = (
            list(default)
            if selection is None
            else [selection]
            if isinstance(selection, str)
            else list(selection)
        )
        unknown = [c for c in chosen if c not in allowed]
        if unknown or not chosen:
            raise ValueError(
                f"{cls.title}: {cls.selection_key}={chosen} must name one or more of {', '.join(allowed)}"
                + (f" ({', '.join(map(str, unknown))} unknown)" if unknown else "")
            )
        return list(dict.fromkeys(chosen))

    # -- PreparedDataset hooks -------------------------------------------------------------------------
    def _find_images(self) -> dict[str, Path]:
        self._group_of: dict[str, Group] = {}
        out: dict[str, Path] = {}
        for g in self._groups:
            if not g.images.is_dir():
                raise self._missing_dir(g.images, g.what)
            found = find_images(g)
            self._group_of.update(dict.fromkeys(found, g))
            out.update(found)
        return out

    def _find_labels(self) -> dict[str, Path]:
        out = {}
        for name, g in self._group_of.items():
            if g.labels is None:
                continue
            p = self._expected_label(name, None)
            if p is not None and p.is_file():
                out[name] = p
        return out

    def _expected_label(self, name: str, image: Path | None) -> Path | None:
        g = self._group_of[name]
        seq, stem = name.split("/")[-2:]
        return None if g.labels is None else g.labels / seq / f"{stem}{LABEL_SUFFIX}"

    def _label_hint(self) -> str:
        return f"*{LABEL_SUFFIX}"

    def _missing_labels(
        self, missing: list[str], names: list[str], images: dict[str, Path]
    ) -> FileNotFoundError:
        k = missing[0]
        more = f" (and {len(missing) - 1} more image(s) without a label)" if len(missing) > 1 else ""
        return FileNotFoundError(
            f"{self.title}: image {images[k]} has no label {self._expected_label(k, images[k])}{more}: "
            f"extract the labels ({self._group_of[k].what}) into {self.root}, or delete the image; then run "
            f"`{self.command}`"
        )

    def _check_manifest(self) -> None:
        """The preparation must have checked this split's groups (one line naming the manifest, the fix)."""
        path = self.root / MANIFEST_FILE
        man = read_manifest(self.root)
        if man is None or man.get("dataset") != self.dataset:
            why = "does not exist" if man is None else f"is {man.get('dataset')!r}'s, not {self.dataset!r}'s"
            raise FileNotFoundError(
                f"{self.title}: {path} {why}: the {self.title} images and labels under {self.root} have not "
                f"been checked. Run `{self.command}`"
            )
        prepared = (man.get("splits") or {}).get(self.split, {}).get("groups", [])
        todo = [g.name for g in self._groups if g.name not in prepared]
        if todo:
            raise FileNotFoundError(
                f"{self.title}: {path} does not cover the {self.split} split of {', '.join(todo)} (prepared: "
                f"{', '.join(prepared) or 'none'}). Run `{self.command}`"
            )

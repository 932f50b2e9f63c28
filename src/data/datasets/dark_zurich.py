"""Dark Zurich reader: the nighttime target of Cityscapes -> Dark Zurich.

The release layout under ``ROOT`` (``$DATA_ROOT/dark_zurich``), as its three archives unpack
(www.trace.ethz.ch/publications/2019/GCMA_UIoU)::

    Dark_Zurich_train_anon/rgb_anon/train/{day,twilight,night}/<sequence>/<sequence>_frame_<n>_rgb_anon.png
    Dark_Zurich_val_anon/rgb_anon/val/night/<sequence>/..._rgb_anon.png              50 labelled images
    Dark_Zurich_val_anon/gt/val/night/<sequence>/..._gt_labelTrainIds.png            their train ids
    Dark_Zurich_test_anon/rgb_anon/test/night/<sequence>/..._rgb_anon.png            151 unlabelled images

(``*_ref`` folders hold daytime references, unused). The archives may also be unpacked into one folder
(``ROOT/rgb_anon/{train,val,test}``, ``ROOT/gt/val``, MIC's README layout): for each split the reader looks in
``Dark_Zurich_<split>_anon/`` first, then in ``ROOT`` itself.

MIC's target is the **night** training images only (``configs/_base_/datasets/
uda_cityscapesHR_to_darkzurichHR_1024x1024.py``: ``img_dir='rgb_anon/train/night/'``), validation the 50
labelled val images (``rgb_anon/val``, ``gt/val``); ``times`` selects the times of day of the train split
(night by default). Test scores come from the benchmark server (``python -m src.predict ...
format=submission``).

``python scripts/prepare_data.py dark_zurich ROOT`` checks every pair and writes ``manifest.json`` (no
statistics: no training split is labelled); the reader needs that manifest.
"""

from __future__ import annotations

from pathlib import Path

from src.data.datasets.rgb_anon import Group, ReleaseDataset

TIMES = ("day", "twilight", "night")
#: images of the full release per split (Dark Zurich page / GCMA paper: 2416 night, 2920 twilight, 3041 day
#: train images; 50 val and 151 test night images)
SPLIT_SIZES = {"val": 50, "test": 151}


def split_root(root: Path, split: str) -> Path:
    """The folder holding ``rgb_anon/<split>``: ``ROOT/Dark_Zurich_<split>_anon`` (as unpacked), else ROOT."""
    own = root / f"Dark_Zurich_{split}_anon"
    if (own / "rgb_anon" / split).is_dir() or not (root / "rgb_anon" / split).is_dir():
        return own
    return root


class DarkZurichDataset(ReleaseDataset):
    """Dark Zurich ``split``: train (the ``times`` of day, night by default; unlabelled), val (50 labelled
    night images) or test (151 unlabelled night images)."""

    dataset = "dark_zurich"
    title = "Dark Zurich"
    layout = (
        "Dark_Zurich_{train,val,test}_anon/rgb_anon/<split>/<time>/<sequence>/*_rgb_anon.png, "
        "Dark_Zurich_val_anon/gt/val/night/<sequence>/*_gt_labelTrainIds.png"
    )
    selection_key = "times"

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "val",
        times: list[str] | tuple[str, ...] | str | None = None,
        labels: bool | None = None,
        require_stats: bool = False,
    ) -> None:
        if labels is None:
            labels = split == "val"
        super().__init__(root, split=split, selection=times, labels=labels, require_stats=require_stats)

    @classmethod
    def groups(cls, root: Path, split: str, selection) -> list[Group]:
        base = split_root(Path(root), split)
        archive = (
            f"Dark_Zurich_{split}_anon.zip" if split != "test" else "Dark_Zurich_test_anon_withoutGt.zip"
        )
        if split != "train":  # val and test are night images only
            chosen = (
                ["night"]
                if selection is None
                else [selection]
                if isinstance(selection, str)
                else list(selection)
            )
            if chosen != ["night"]:
                raise ValueError(f"Dark Zurich {split} holds night images only, not times={chosen}")
            times = chosen
        else:
            times = cls._selection(selection, TIMES, ("night",))
        return [
            Group(
                t,
                base / "rgb_anon" / split / t,
                base / "gt" / split / t if split == "val" else None,
                f"the {t} images of {archive}",
            )  # fmt: skip
            for t in times
        ]

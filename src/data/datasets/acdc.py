"""ACDC reader (Adverse Conditions Dataset with Correspondences): the target of Cityscapes -> ACDC.

The release layout under ``ROOT`` (``$DATA_ROOT/acdc``), as ``rgb_anon_trainvaltest.zip`` and
``gt_trainval.zip`` unpack (acdc.vision.ee.ethz.ch/download)::

    rgb_anon/<condition>/{train,val,test}/<sequence>/<sequence>_frame_<n>_rgb_anon.png    RGB, 1920x1080
    rgb_anon/<condition>/{train,val,test}_ref/...                                          normal-condition
                                                                                           references (unused)
    gt/<condition>/{train,val}/<sequence>/<sequence>_frame_<n>_gt_labelTrainIds.png         train ids (+ the
                                                                                           release's labelIds,
                                                                                           color, invGray)

with ``<condition>`` one of fog, night, rain, snow (1600 train / 406 val / 2000 test images in all; the test
labels are withheld: test scores come from the benchmark server, ``python -m src.predict ...
format=submission``). MIC reads the same files (``seg/mmseg/datasets/acdc.py``: ``_rgb_anon.png`` /
``_gt_labelTrainIds.png``) after flattening the conditions into ``rgb_anon/{train,val}/`` (MIC README); here
the conditions are read in place and selected with ``conditions`` (all four by default, as MIC's flattened
folders hold all four: ``configs/_base_/datasets/uda_cityscapesHR_to_acdcHR_1024x1024.py`` reads
``rgb_anon/train`` as the target and ``rgb_anon/val`` for validation).

``python scripts/prepare_data.py acdc ROOT`` checks every pair and writes ``manifest.json`` (and the
statistics of the labelled train split, for ACDC as a labelled source); the reader needs that manifest.
"""

from __future__ import annotations

from pathlib import Path

from src.data.datasets.rgb_anon import Group, ReleaseDataset

CONDITIONS = ("fog", "night", "rain", "snow")
#: images of the full release per split (ACDC paper / download page: 1600 / 406 / 2000, 500 test a condition)
SPLIT_SIZES = {"train": 1600, "val": 406, "test": 2000}


class ACDCDataset(ReleaseDataset):
    """ACDC ``split`` of the selected ``conditions`` (all four by default), read in place.

    ``labels`` (default: not for test, whose labels are withheld) reads the released
    ``*_gt_labelTrainIds.png``; the target domain reads none. ``require_stats`` checks
    ``ROOT/sample_class_stats.json`` (written for the labelled train split), for ACDC as a labelled source.
    """

    dataset = "acdc"
    title = "ACDC"
    layout = (
        "rgb_anon/<condition>/<split>/<sequence>/*_rgb_anon.png, "
        "gt/<condition>/<split>/<sequence>/*_gt_labelTrainIds.png"
    )
    selection_key = "conditions"

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        conditions: list[str] | tuple[str, ...] | str | None = None,
        labels: bool | None = None,
        require_stats: bool = False,
    ) -> None:
        if labels is None:
            labels = split != "test"
        super().__init__(root, split=split, selection=conditions, labels=labels, require_stats=require_stats)

    @classmethod
    def groups(cls, root: Path, split: str, selection) -> list[Group]:
        out = []
        for c in cls._selection(selection, CONDITIONS, CONDITIONS):
            labels = None if split == "test" else root / "gt" / c / split
            part = "rgb_anon_trainvaltest.zip" + ("" if labels is None else " and gt_trainval.zip")
            out.append(Group(c, root / "rgb_anon" / c / split, labels, f"the {c} {split} split of {part}"))
        return out

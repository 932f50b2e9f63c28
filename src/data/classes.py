"""Class names, palettes, id maps and evaluation subsets.

Everything is expressed in the 19 Cityscapes *train ids* (0..18, 255 = ignore), the label space all
synthetic-to-real UDA benchmarks share. Sources: Cityscapes `labels.py` (names, colours),
reference/daformer_mic.md §6 (GTA5 / SYNTHIA maps, 16- and 13-class protocols),
reference/video_uda.md (VIPER 15 and SYNTHIA-Seq 11 class protocols).
"""

from __future__ import annotations

from collections.abc import Sequence

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# DAFormer thing classes for the ImageNet feature distance (daformer_mic.md §1.6): traffic light,
# traffic sign, person, rider, car, truck, bus, train, motorcycle, bicycle. Pole (5) is *not* in it.
THING_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)

# Cityscapes label id -> train id (also GTA5's palette indices), daformer_mic.md §6.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

# Named evaluation subsets (train ids). SYNTHIA has no terrain, truck, train (16 classes); the
# 13-class protocol further drops wall, fence, pole (daformer_mic.md §6, CBST#7).
_SYN16 = tuple(c for c in range(19) if c not in (9, 14, 16))
EVAL_SUBSETS: dict[str, tuple[int, ...]] = {
    "19": tuple(range(19)),
    "16": _SYN16,
    "13": tuple(c for c in _SYN16 if c not in (3, 4, 5)),
}


def class_names(num_classes: int = 19) -> tuple[str, ...]:
    if num_classes == 19:
        return CITYSCAPES_CLASSES
    raise ValueError(f"no built-in class names for {num_classes} classes; pass a classes file")


def read_classes_file(path: str) -> tuple[str, ...]:
    """One class name a line, in train-id order; blank lines and '#' comments are skipped."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"classes file {p} does not exist: write one class name a line, in train-id order "
            f"(line 1 = id 0), and pass it as data.classes_file=<path>"
        )
    names = [ln.strip() for ln in p.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"classes file {p} names no class: write one class name a line")
    return tuple(names)


def palette_for(num_classes: int, names: Sequence[str] | None = None) -> list[tuple[int, int, int]]:
    """Cityscapes palette for the first 19 ids, deterministic distinct colours after that.

    With ``names`` (a label space whose ids differ from Cityscapes', e.g. the 15 / 12-class video
    protocols), each class gets the Cityscapes colour of its name (:func:`protocol_palette`).
    """
    if names is not None and list(names) != list(CITYSCAPES_CLASSES[: len(names)]):
        return protocol_palette(names)
    pal = list(CITYSCAPES_PALETTE[:num_classes])
    i = len(pal)
    while len(pal) < num_classes:
        pal.append(((37 * i) % 256, (91 * i + 50) % 256, (173 * i + 100) % 256))
        i += 1
    return pal


# SYNTHIA-RAND-CITYSCAPES class id (R channel of GT/LABELS/*.png) -> Cityscapes train id,
# daformer_mic.md §6 (DAFormer tools/convert_datasets/synthia.py). Ids 16 (terrain), 18 (truck) and
# 20 (train) are in the map but never occur in the data, so the 16-class protocol drops those classes.
SYNTHIA_ID_TO_TRAINID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
    8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}  # fmt: skip


def map_to_train_ids(ids, mapping: dict[int, int]):
    """Integer id map (uint8 or uint16, any shape) -> uint8 train ids; ids not in `mapping` -> 255.

    A look-up table over the whole id range, so every value not listed (void, negative or above the
    largest key) maps to IGNORE_INDEX.
    """
    import numpy as np

    ids = np.asarray(ids)
    if ids.dtype.kind not in "ui":
        raise TypeError(f"id maps need an integer array, got {ids.dtype}")
    size = 65536 if ids.dtype.itemsize > 1 else 256
    if ids.size:
        size = max(size, int(ids.max()) + 1)
    lut = np.full(size, IGNORE_INDEX, np.uint8)
    for k, v in mapping.items():
        if 0 <= k < size:
            lut[k] = v
    if ids.dtype.kind == "i" and ids.size and int(ids.min()) < 0:
        return np.where(ids < 0, IGNORE_INDEX, lut[np.maximum(ids, 0)]).astype(np.uint8)
    return lut[ids]


# --------------------------------------------------------------------------------------------------
# Video UDA protocols (video_uda.md §1.4-§1.5, udass.md §2.2): the networks are trained in a 15-class
# (VIPER -> Cityscapes-Seq) or 12-class (SYNTHIA-Seq -> Cityscapes-Seq) label space of their own; ids below
# are indices into those spaces, not Cityscapes train ids.
# --------------------------------------------------------------------------------------------------
# The 15-class benchmark order (video_uda.md §1.4 "Class order for the 15-class benchmark").
VIPER15_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "fence", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "car", "truck", "bus", "motorcycle", "bicycle",
)  # fmt: skip

# SYNTHIA-Seq's 12 trained classes (udass.md §2.2): fence (index 3) is dropped at evaluation.
SYNTHIA_SEQ12_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "fence", "pole", "traffic light", "traffic sign", "vegetation", "sky",
    "person", "rider", "car",
)  # fmt: skip

# VIPER class id (palette index of the `cls` PNGs) -> 15-class id, udass.md §2.2 / video_uda.md §1.4.
# Van (25) is ignored, not mapped to car; everything unlisted -> 255.
VIPER_ID_TO_VIPER15: dict[int, int] = {
    3: 0, 4: 1, 9: 2, 11: 3, 13: 4, 14: 5, 7: 6, 8: 6, 6: 7, 2: 8, 20: 9, 24: 10, 27: 11, 26: 12, 23: 13,
    22: 14,
}  # fmt: skip
VIPER_CAR_ID = 24  # the class whose bottom-centre component is the ego vehicle (video_uda.md §1.4)
VIPER_VAN_ID = 25

# Cityscapes label id -> 15-class id for the VIPER protocol (`info_Viper.json`, udass.md §2.2): rider (25)
# is merged into person; wall, pole, train and the rest -> 255.
CITYSCAPES_ID_TO_VIPER15: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 13: 3, 19: 4, 20: 5, 21: 6, 22: 7, 23: 8, 24: 9, 25: 9, 26: 10, 27: 11, 28: 12,
    32: 13, 33: 14,
}  # fmt: skip

# SYNTHIA-Seq class id (R channel of GT/LABELS) -> 12-class id (`SynthiaSeq.py`, udass.md §2.2):
# bicycle (11) -> rider, lanemarking (12) and the rest -> 255.
SYNTHIA_SEQ_ID_TO_SYNTHIA12: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 5: 3, 7: 4, 15: 5, 9: 6, 6: 7, 1: 8, 10: 9, 11: 10, 8: 11,
}  # fmt: skip

# Cityscapes label id -> 12-class id for the SYNTHIA-Seq protocol (`info_SynthiaSeq.json`, udass.md §2.2):
# terrain, truck, bus, motorcycle, bicycle -> 255.
CITYSCAPES_ID_TO_SYNTHIA12: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 13: 3, 17: 4, 19: 5, 20: 6, 21: 7, 23: 8, 24: 9, 25: 10, 26: 11,
}  # fmt: skip

# Evaluation subsets of the video protocols, in their own label spaces: VIPER's 15 classes, and
# SYNTHIA-Seq's 11 = the 12 trained classes without fence (index 3, video_uda.md §1.5 "Evaluation").
EVAL_SUBSETS["15"] = tuple(range(15))
EVAL_SUBSETS["11"] = tuple(c for c in range(12) if c != 3)
# The label space each video subset is defined in (a 19-class model must not report them).
EVAL_SUBSET_NUM_CLASSES: dict[str, int] = {"15": 15, "11": 12}


def protocol_palette(names: tuple[str, ...] | list[str]) -> list[tuple[int, int, int]]:
    """Cityscapes colours by class *name* (for the 15 / 12-class protocols, whose ids differ); names that
    are not Cityscapes classes get the distinct extra colours of :func:`palette_for`."""
    by_name = dict(zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE))
    extra = palette_for(len(CITYSCAPES_CLASSES) + len(names))[len(CITYSCAPES_CLASSES) :]
    return [by_name.get(n, extra[i]) for i, n in enumerate(names)]

"""Class names, palettes, id maps and evaluation subsets.

Everything is expressed in the 19 Cityscapes *train ids* (0..18, 255 = ignore), the label space all
synthetic-to-real UDA benchmarks share. Sources: Cityscapes `labels.py` (names, colours),
reference/daformer_mic.md §6 (GTA5 / SYNTHIA maps, 16- and 13-class protocols),
reference/video_uda.md (VIPER 15 and SYNTHIA-Seq 11 class protocols).
"""

from __future__ import annotations

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


def palette_for(num_classes: int) -> list[tuple[int, int, int]]:
    """Cityscapes palette for the first 19 ids, deterministic distinct colours after that."""
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

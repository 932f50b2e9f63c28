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

# Cityscapes' classes with instances (its label table's hasInstances; the eight the synthetic generator draws
# as objects): person, rider, car, truck, bus, train, motorcycle, bicycle; aggregate_results.py --rare.
INSTANCE_CLASSES: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18)

# UDASS QuadMix's rare classes, the GTA list (udass.md §1.4g): wall, fence, pole, traffic light, rider, bus,
# train, motorcycle, bicycle.
RARE_CLASSES: tuple[int, ...] = (3, 4, 5, 6, 12, 15, 16, 17, 18)

# --------------------------------------------------------------------------------------------------
# Class lists by meaning. The strategies' class lists (FD / FDM / CAM thing classes, QuadMix's rare
# classes) are written in the configs as a named set (`things`, `rare`) or as class names, and resolved
# against the run's class names (data.class_names, i.e. the classes file): on the 19 Cityscapes classes
# they give exactly the id lists above, on VIPER's 15 / SYNTHIA-Seq's 12 classes the ids of the same names,
# and on a user's set the ids of its classes with those meanings. Names are matched after
# `normalize_class_name`, through the Cityscapes names and the synonyms below; a set cannot be resolved
# on a label space with a name the library does not know (it cannot tell whether that class belongs),
# and the error asks for the explicit id list.
# --------------------------------------------------------------------------------------------------
CLASS_SETS: dict[str, tuple[str, ...]] = {
    "things": tuple(CITYSCAPES_CLASSES[c] for c in THING_CLASSES),
    "rare": tuple(CITYSCAPES_CLASSES[c] for c in RARE_CLASSES),
}

# Common names of the Cityscapes classes in other label sets (ADE20K, Mapillary, COCO-Stuff, CamVid,
# SYNTHIA, VIPER, BDD, IDD) -> the Cityscapes name. Lower case, "_" / "-" read as spaces, a plural "s"
# is dropped when the singular is known.
CLASS_SYNONYMS: dict[str, str] = {
    "street": "road", "roadway": "road", "lane": "road", "lanemarking": "road", "lane marking": "road",
    "drivable area": "road", "parking": "road",
    "pavement": "sidewalk", "footpath": "sidewalk", "side walk": "sidewalk", "curb": "sidewalk",
    "house": "building", "buildings": "building",
    "guard rail": "fence", "guardrail": "fence", "railing": "fence", "barrier": "fence",
    "poles": "pole", "pole group": "pole", "polegroup": "pole", "street light": "pole", "streetlight": "pole",
    "column": "pole", "utility pole": "pole",
    "trafficlight": "traffic light", "traffic signal": "traffic light",
    "trafficsign": "traffic sign", "sign": "traffic sign", "road sign": "traffic sign",
    "signsymbol": "traffic sign", "sign symbol": "traffic sign",
    "tree": "vegetation", "trees": "vegetation", "plant": "vegetation", "plants": "vegetation",
    "bush": "vegetation", "foliage": "vegetation",
    "grass": "terrain", "ground": "terrain", "soil": "terrain", "sand": "terrain", "dirt": "terrain",
    "lawn": "terrain",
    "pedestrian": "person", "pedestrians": "person", "people": "person", "human": "person",
    "persons": "person",
    "cyclist": "rider", "bicyclist": "rider", "motorcyclist": "rider", "riders": "rider",
    "automobile": "car", "cars": "car", "vehicle": "car",
    "lorry": "truck", "trucks": "truck",
    "buses": "bus", "autobus": "bus",
    "tram": "train", "on rails": "train", "trains": "train",
    "motorbike": "motorcycle", "motor": "motorcycle", "moto": "motorcycle", "motorcycles": "motorcycle",
    "bike": "bicycle", "bikes": "bicycle", "cycle": "bicycle", "bicycles": "bicycle",
}  # fmt: skip
# Names of classes that are none of the Cityscapes 19 and neither things nor rare: known, so that a set
# resolves on a label space holding them.
OTHER_CLASS_NAMES: tuple[str, ...] = (
    "background", "void", "unlabeled", "unlabelled", "ignore", "other", "others", "misc", "clutter",
    "water", "sea", "river", "lake", "snow", "mountain", "rock", "sand beach", "ego vehicle",
)  # fmt: skip
_CANONICAL = {n: n for n in (*CITYSCAPES_CLASSES, *OTHER_CLASS_NAMES)}


def normalize_class_name(name: str) -> str:
    """Lower case, '_' and '-' as spaces, runs of spaces collapsed: the form class names are compared in."""
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def canonical_class_name(name: str) -> str | None:
    """The Cityscapes class a name means (itself, a synonym, a plural), or None for a name not known."""
    n = normalize_class_name(name)
    for cand in (n, n[:-1] if n.endswith("s") else None, n.replace(" ", "")):
        if cand and (cand in _CANONICAL or cand in CLASS_SYNONYMS):
            return _CANONICAL.get(cand) or CLASS_SYNONYMS[cand]
    return None


def _where(classes_file: str | None) -> str:
    return (
        f"data.classes_file={classes_file}"
        if classes_file not in (None, "", "null", "None")
        else "the run's class names (data.class_names)"
    )


def resolve_class_list(
    value, class_names: Sequence[str], *, key: str, classes_file: str | None = None
) -> tuple[int, ...] | None:
    """A strategy's class list in the run's ids: a named set (`things`, `rare`), or a list of ids and/or
    class names (repeats kept: QuadMix's rare list uses them as weights). None stays None.

    Errors (one line, ValueError): an unknown set, an id outside 0..C-1, a name that is not a class of the
    run, a set on a label space holding a class name the library does not know (the error asks for the
    explicit list, e.g. ``uda.fd.classes=[1,4]``), a set that selects no class."""
    if value is None:
        return None
    names = list(class_names)
    where = _where(classes_file)
    if isinstance(value, str):
        sets = CLASS_SETS
        if value not in sets:
            raise ValueError(f"{key}={value!r}: not a class set ({', '.join(sets)}) nor a list of classes; "
                             f"write {key}=[<id or name>, ...]")  # fmt: skip
        unknown = [(i, n) for i, n in enumerate(names) if canonical_class_name(n) is None]
        if unknown:
            shown = ", ".join(f"{n!r} (id {i})" for i, n in unknown[:4])
            shown += " ..." if len(unknown) > 4 else ""
            raise ValueError(
                f"{key}={value}: the library does not know the class(es) {shown} of {where}, so it cannot "
                f"tell which classes are {value}; list their ids or names: {key}=[<id or name>, ...]"
            )
        wanted = set(sets[value])
        ids = tuple(i for i, n in enumerate(names) if canonical_class_name(n) in wanted)
        if not ids:
            raise ValueError(
                f"{key}={value}: none of the {len(names)} classes of {where} is one of the {value} "
                f"({', '.join(sets[value])}); list the classes explicitly ({key}=[<id or name>, ...]) or "
                f"switch the strategy off"
            )
        return ids
    if isinstance(value, (int, float)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{key}={value!r}: expected a class set ({', '.join(CLASS_SETS)}) or a list")
    by_name = {normalize_class_name(n): i for i, n in enumerate(names)}
    by_meaning: dict[str, int] = {}
    for i, n in enumerate(names):
        c = canonical_class_name(n)
        if c is not None:
            by_meaning.setdefault(c, i)
    out = []
    for v in value:
        if isinstance(v, bool):
            raise ValueError(f"{key}: {v!r} is not a class id or name")
        if isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()):
            i = int(v)
            if not 0 <= i < len(names):
                raise ValueError(f"{key}: class id {i} is not one of the {len(names)} classes of {where} "
                                 f"(ids 0..{len(names) - 1})")  # fmt: skip
            out.append(i)
            continue
        n = normalize_class_name(v)
        i = by_name.get(n)
        if i is None and canonical_class_name(n) is not None:
            i = by_meaning.get(canonical_class_name(n))
        if i is None:
            raise ValueError(f"{key}: {v!r} is not a class of {where} ({', '.join(names)})")
        out.append(i)
    return tuple(out)


#: the strategy config keys holding class lists, resolved by `resolve_class_lists`
CLASS_LIST_KEYS = ("classes", "thing_classes", "source_rare_classes")


def resolve_class_lists(
    node, class_names: Sequence[str], *, classes_file: str | None = None, key: str = "uda"
):
    """A copy of a strategy config (plain dicts / lists, or OmegaConf containers) whose class lists
    (`CLASS_LIST_KEYS`) are resolved to lists of ids (:func:`resolve_class_list`); other values are kept."""
    from collections.abc import Mapping

    if isinstance(node, Mapping):
        out = {}
        for k, v in node.items():
            if k in CLASS_LIST_KEYS and not isinstance(v, Mapping):
                ids = resolve_class_list(v, class_names, key=f"{key}.{k}", classes_file=classes_file)
                out[k] = None if ids is None else list(ids)
            else:
                out[k] = resolve_class_lists(v, class_names, classes_file=classes_file, key=f"{key}.{k}")
        return out
    if isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        return [resolve_class_lists(v, class_names, classes_file=classes_file, key=f"{key}[{j}]")
                for j, v in enumerate(node)]  # fmt: skip
    return node


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


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """The class names of a label space without a classes file: Cityscapes' for 19 classes, else the ids."""
    return CITYSCAPES_CLASSES if num_classes == 19 else tuple(str(i) for i in range(num_classes))


def read_classes_file(path: str) -> tuple[str, ...]:
    """One class name a line, in train-id order (line 1 = id 0).

    Lines starting with '#' are comments and trailing empty lines are ignored. A blank line between class
    names (ids after it would shift by one) and a name given twice (one class would vanish from the
    per-class table and results.json) are errors naming the file and the line.
    """
    from pathlib import Path

    from src.data.errors import DataError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"classes file {p} does not exist: write one class name a line, in train-id order "
            f"(line 1 = id 0), and pass it as data.classes_file=<path>"
        )
    lines = p.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        name = line.strip()
        if name.startswith("#"):
            continue
        if not name:
            raise DataError(
                f"classes file {p}, line {n} is blank: every line names the class of the next id "
                f"(line 1 = id 0), so the ids after a blank line would shift; name the class (e.g. "
                f"'unused') or delete the line",
                p,
            )
        key = normalize_class_name(name)
        if key in seen:
            raise DataError(
                f"classes file {p}, line {n}: {name!r} repeats line {seen[key]}; every class needs its own "
                f"name (the per-class table and results.json are keyed by name)",
                p,
            )
        seen[key] = n
        names.append(name)
    if not names:
        raise DataError(f"classes file {p} names no class: write one class name a line", p)
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

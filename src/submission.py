"""Benchmark-server submissions: the test predictions in the form the ACDC, Dark Zurich and Cityscapes
evaluation servers accept, as one zip (``python -m src.predict ... format=submission``; README "Benchmark
servers").

The rules (what each server reads; sources in :data:`BENCHMARKS` and the README):

- **ACDC** (acdc.vision.ee.ethz.ch/submit): one zip holding ``labelTrainIds/``; exactly one PNG per test
  image (2000: 500 per condition), named ``{sequence}_frame_{frame:0>6}*.png`` (anywhere inside
  ``labelTrainIds/``), of the input image's size (1920x1080), holding **train ids** (road = 0). All four
  conditions go in one zip; the server's form chooses the subset it scores (all adverse, fog, night, ...).
- **Dark Zurich** (the UIoU CodaLab competition, codalab.lisn.upsaclay.fr/competitions/3783): one zip
  holding three folders, ``labelTrainIds/`` (train ids, scored by IoU: the papers' number),
  ``labelTrainIds_invalid/`` (train ids with 255 where the method abstains, for the uncertainty-aware UIoU)
  and ``confidence/`` (the confidence of each pixel); one file each per test image (151), named
  ``{sequence}_frame_{frame:0>6}*.png``, 1920x1080.
- **Cityscapes** (www.cityscapes-dataset.com/submit): one zip, one PNG per test image (1525) named
  ``{city}_{sequence:0>6}_{frame:0>6}*.png`` (any sub-folder), holding **label ids** (road = 7; the inverse
  of ``CITYSCAPES_ID_TO_TRAINID``), 2048x1024.

We write: ``<name>.png`` where ``<name>`` is the image file name without its release suffix
(``GOPR0122_frame_000161`` for ``GOPR0122_frame_000161_rgb_anon.png``), flat inside each folder (the names are
unique across sequences and conditions); uint8 ids; Dark Zurich's confidence as a 16-bit PNG of the softmax
maximum times 65535, and ``labelTrainIds_invalid`` = the prediction with 255 where that confidence is below
``invalid_below`` (none by default: UIoU then equals IoU). The export reads the zip back and checks it
against the rules above (:func:`check_submission`) before it reports success.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from src.data.classes import CITYSCAPES_ID_TO_TRAINID


@dataclass(frozen=True)
class Benchmark:
    """One server's rules."""

    name: str
    title: str
    image_suffix: str  # the test images' file-name suffix
    layout: str  # where the test images are (for messages)
    name_pattern: str  # regex a result file name must match (the server's "{...}*.png")
    ids: str  # "train" (0..18) or "label" (Cityscapes label ids)
    folders: tuple[str, ...]  # the zip's top-level folders
    test_images: int  # images of the full test set (one result each)
    size: tuple[int, int]  # (w, h) of the test images
    server: str  # where to upload
    source: str  # where the rules are from


BENCHMARKS: dict[str, Benchmark] = {
    "acdc": Benchmark(
        name="acdc",
        title="ACDC",
        image_suffix="_rgb_anon.png",
        layout="rgb_anon/<condition>/test/<sequence>/*_rgb_anon.png",
        name_pattern=r"^[A-Za-z0-9]+_frame_\d{6}.*\.png$",
        ids="train",
        folders=("labelTrainIds",),
        test_images=2000,
        size=(1920, 1080),
        server="https://acdc.vision.ee.ethz.ch/submit",
        source="the ACDC submission page's requirements as quoted by the DTBS README and, for the same "
        "group's MUSES server, MUSES issue #4; MIC README (test predictions as train ids, to_label_id=False)",
    ),
    "dark_zurich": Benchmark(
        name="dark_zurich",
        title="Dark Zurich",
        image_suffix="_rgb_anon.png",
        layout="Dark_Zurich_test_anon/rgb_anon/test/night/<sequence>/*_rgb_anon.png",
        name_pattern=r"^[A-Za-z0-9]+_frame_\d{6}.*\.png$",
        ids="train",
        folders=("labelTrainIds", "labelTrainIds_invalid", "confidence"),
        test_images=151,
        size=(1920, 1080),
        server="https://codalab.lisn.upsaclay.fr/competitions/3783",
        source="the three folders: SePiCo README ('the test server only accepts submission with the "
        "following directory structure'), DANNet issue #11 (authors), BiMix issue #7; train ids: MIC README",
    ),
    "cityscapes": Benchmark(
        name="cityscapes",
        title="Cityscapes",
        image_suffix="_leftImg8bit.png",
        layout="leftImg8bit/test/<city>/*_leftImg8bit.png",
        name_pattern=r"^[a-z_]+_\d{6}_\d{6}.*\.png$",
        ids="label",
        folders=("labelIds",),
        test_images=1525,
        size=(2048, 1024),
        server="https://www.cityscapes-dataset.com/submit",
        source="cityscapesScripts issues #65 / #117 (maintainers: label ids, 'berlin_000123_000019*.ext', "
        "exactly one file per test image)",
    ),
}

#: train id -> Cityscapes label id (the inverse of CITYSCAPES_ID_TO_TRAINID; 255 -> 0, "unlabeled")
TRAINID_TO_LABELID = np.zeros(256, np.uint8)
for _label_id, _train_id in CITYSCAPES_ID_TO_TRAINID.items():
    TRAINID_TO_LABELID[_train_id] = _label_id
CONFIDENCE_SCALE = 65535  # confidence PNG: uint16, p * 65535


def benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"submission.benchmark={name!r} is not one of {', '.join(BENCHMARKS)} (or auto)")
    return BENCHMARKS[name]


def _in_test_split(path: Path, depth: int) -> bool:
    """True when the folder ``depth`` levels above the file is named ``test`` (not ``test_ref``)."""
    parents = path.parents
    return len(parents) > depth and parents[depth].name == "test"


def find_test_images(root: str | Path, name: str = "auto") -> tuple[Benchmark, list[Path]]:
    """(benchmark, sorted test images) under ``root``; ``auto`` tells the release by its layout: ACDC
    ``<condition>/test/<sequence>/``, Dark Zurich ``test/<time>/<sequence>/``, Cityscapes
    ``leftImg8bit/test/<city>/``. One-line errors naming ``root`` otherwise."""
    root = Path(str(root)).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"input {root} does not exist: pass input=<the test images' folder>")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*.png") if p.is_file())
    found = {
        "acdc": [p for p in files if p.name.endswith("_rgb_anon.png") and _in_test_split(p, 1)],
        "dark_zurich": [p for p in files if p.name.endswith("_rgb_anon.png") and _in_test_split(p, 2)],
        "cityscapes": [p for p in files if p.name.endswith("_leftImg8bit.png") and _in_test_split(p, 1)],
    }
    if name != "auto":
        b = benchmark(name)
        if not found[name]:
            raise ValueError(f"input {root} holds no {b.title} test image ({b.layout}); pass the test folder")
        return b, found[name]
    present = [k for k, v in found.items() if v]
    if len(present) != 1:
        what = "none" if not present else " and ".join(BENCHMARKS[k].title for k in present)
        raise ValueError(
            f"input {root}: cannot tell the benchmark from its test images (found {what}); pass "
            f"submission.benchmark=acdc|dark_zurich|cityscapes and the test folder ("
            + "; ".join(f"{b.title}: {b.layout}" for b in BENCHMARKS.values())
            + ")"
        )
    return BENCHMARKS[present[0]], found[present[0]]


def result_name(b: Benchmark, image: Path) -> str:
    """``<image name without the release suffix>.png`` (matches the server's ``{...}*.png`` pattern)."""
    return image.name[: -len(b.image_suffix)] + ".png"


def encode(b: Benchmark, train_ids: np.ndarray) -> np.ndarray:
    """A prediction (HxW train ids) in the ids the server reads."""
    t = np.asarray(train_ids, np.uint8)
    return TRAINID_TO_LABELID[t] if b.ids == "label" else t


def _png(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), a):
        raise OSError(f"cannot write {path}")


def write_result(
    b: Benchmark, out_dir: Path, image: Path, probs_max: np.ndarray, train_ids: np.ndarray,
    invalid_below: float | None = None,
) -> str:  # fmt: skip
    """Write one test image's result files under ``out_dir/<folder>/``; returns the result name."""
    name = result_name(b, image)
    labels = encode(b, train_ids)
    _png(out_dir / b.folders[0] / name, labels)
    if "labelTrainIds_invalid" in b.folders:
        invalid = labels.copy()
        if invalid_below is not None:
            invalid[probs_max < float(invalid_below)] = 255
        _png(out_dir / "labelTrainIds_invalid" / name, invalid)
    if "confidence" in b.folders:
        conf = np.clip(np.rint(probs_max.astype(np.float64) * CONFIDENCE_SCALE), 0, CONFIDENCE_SCALE)
        _png(out_dir / "confidence" / name, conf.astype(np.uint16))
    return name


def zip_folder(b: Benchmark, out_dir: Path, zip_path: Path) -> Path:
    """The result folders of ``out_dir`` as one zip, the folders at its top level."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for folder in b.folders:
            for p in sorted((out_dir / folder).glob("*.png")):
                z.write(p, f"{folder}/{p.name}")
    tmp.replace(zip_path)
    return zip_path


def check_submission(
    b: Benchmark, zip_path: str | Path, images: list[Path], sizes: dict[str, tuple[int, int]] | None = None
) -> list[str]:
    """Problems of a submission zip against ``b``'s rules for these test ``images`` (empty: it conforms):
    the top-level folders, one result per image in each folder and nothing else, the file names, PNG depth
    and size, and the ids (train ids 0..18 or the 19 classes' label ids; 255 in the invalid folder only)."""
    problems: list[str] = []
    want = {result_name(b, p) for p in images}
    pattern = re.compile(b.name_pattern)
    allowed_ids = set(range(19)) if b.ids == "train" else set(CITYSCAPES_ID_TO_TRAINID)
    with zipfile.ZipFile(zip_path) as z:
        entries = [n for n in z.namelist() if not n.endswith("/")]
        tops = {n.split("/", 1)[0] for n in entries}
        if tops != set(b.folders):
            problems.append(f"top-level folders {sorted(tops)}, expected {list(b.folders)}")
        for folder in b.folders:
            names = [n.split("/", 1)[1] for n in entries if n.startswith(folder + "/")]
            got = {Path(n).name for n in names}
            if len(got) != len(names):
                problems.append(f"{folder}/: a result name occurs twice")
            if got != want:
                missing, extra = sorted(want - got), sorted(got - want)
                problems.append(f"{folder}/: missing {missing[:3]}, unexpected {extra[:3]}")
            for n in names:
                if not pattern.match(Path(n).name):
                    problems.append(f"{folder}/{n}: the name does not match {b.name_pattern}")
                    continue
                a = cv2.imdecode(np.frombuffer(z.read(f"{folder}/{n}"), np.uint8), cv2.IMREAD_UNCHANGED)
                depth = np.uint16 if folder == "confidence" else np.uint8
                if a is None or a.ndim != 2 or a.dtype != depth:
                    problems.append(f"{folder}/{n}: not a single-channel {np.dtype(depth).name} PNG")
                    continue
                size = (sizes or {}).get(Path(n).name)
                if size is not None and (a.shape[1], a.shape[0]) != size:
                    problems.append(
                        f"{folder}/{n}: {a.shape[1]}x{a.shape[0]}, the image is {size[0]}x{size[1]}"
                    )
                if folder != "confidence":
                    ok = allowed_ids | ({255} if folder.endswith("_invalid") else set())
                    bad = sorted(set(np.unique(a).tolist()) - ok)
                    if bad:
                        problems.append(f"{folder}/{n}: ids {bad[:5]} are not {b.ids} ids")
    return problems

"""scripts/prepare_data.py and the id maps: tiny trees in the exact release formats (GTA5 palette PNGs,
SYNTHIA 16-bit 3-channel PNGs, Cityscapes naming), checked against the daformer_mic.md §6 tables written
out here by hand. The tree builders are shared with test_real_datasets.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from src.data.classes import (
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_PALETTE,
    SYNTHIA_ID_TO_TRAINID,
    map_to_train_ids,
)
from src.data.datasets import cityscapes, gta5, synthia

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("prepare_data", ROOT / "scripts" / "prepare_data.py")
prepare_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare_data)

# daformer_mic.md §6, copied from the tables (label id / SYNTHIA id -> train id 0..18 in order).
GTA_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
SYNTHIA_IDS = [3, 4, 2, 21, 5, 7, 15, 9, 6, 16, 1, 10, 17, 8, 18, 19, 20, 12, 11]
H, W = 32, 64


def expected_train_ids(ids: np.ndarray, table: list[int]) -> np.ndarray:
    out = np.full(ids.shape, 255, np.uint8)
    for train_id, raw_id in enumerate(table):
        out[ids == raw_id] = train_id
    return out


def _blocks(rng: np.random.Generator, values: list[int], h: int, w: int, dtype=np.uint8) -> np.ndarray:
    """An 8x8-block id map drawn from `values` (smooth enough that a nearest resize is checkable)."""
    grid = rng.choice(values, size=(-(-h // 8), -(-w // 8))).astype(dtype)
    return np.kron(grid, np.ones((8, 8), dtype))[:h, :w]


def _rgb(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def save_palette_png(path: Path, ids: np.ndarray) -> None:
    """A GTA5 label: "P" mode PNG whose palette indices are Cityscapes label ids (colours = Cityscapes')."""
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids, np.uint8).tobytes())
    pal = [0] * 768
    for train_id, label_id in enumerate(GTA_IDS):
        pal[3 * label_id : 3 * label_id + 3] = CITYSCAPES_PALETTE[train_id]
    im.putpalette(pal)
    im.save(path)


def make_gta(root: Path, n: int = 3, seed: int = 0, h: int = H, w: int = W) -> dict[str, np.ndarray]:
    """gta/{images,labels}/NNNNN.png; returns {name: expected train ids}."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(n):
        name = f"{i + 1:05d}"
        Image.fromarray(_rgb(rng, h, w)).save(root / "images" / f"{name}.png")
        ids = _blocks(rng, list(range(34)), h, w)
        save_palette_png(root / "labels" / f"{name}.png", ids)
        out[name] = expected_train_ids(ids, GTA_IDS)
    return out


def save_synthia_label(path: Path, class_ids: np.ndarray, rng: np.random.Generator) -> None:
    """A SYNTHIA label: 16-bit 3-channel PNG, class id in R, instance id in G, noise in B.
    cv2 writes channels as B, G, R, so R is index 2 of the array handed to it."""
    raw = np.zeros((*class_ids.shape, 3), np.uint16)
    raw[..., 2] = class_ids
    raw[..., 1] = rng.integers(0, 5000, class_ids.shape)
    raw[..., 0] = rng.integers(0, 65535, class_ids.shape)
    assert cv2.imwrite(str(path), raw)


def make_synthia(root: Path, n: int = 3, seed: int = 1, h: int = H, w: int = W) -> dict[str, np.ndarray]:
    """synthia/RGB/NNNNNNN.png + GT/LABELS/NNNNNNN.png; returns {name: expected train ids}."""
    rng = np.random.default_rng(seed)
    (root / "RGB").mkdir(parents=True, exist_ok=True)
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(n):
        name = f"{i:07d}"
        Image.fromarray(_rgb(rng, h, w)).save(root / "RGB" / f"{name}.png")
        # 0 void, 13/14/22 unlisted, 300 beyond 8 bits: all -> 255; like the release, no terrain (16),
        # truck (18) or train (20)
        ids = _blocks(rng, [v for v in range(23) if v not in (16, 18, 20)] + [300], h, w, np.uint16)
        save_synthia_label(root / "GT" / "LABELS" / f"{name}.png", ids, rng)
        out[name] = expected_train_ids(ids, SYNTHIA_IDS)
    return out


def make_cityscapes(
    root: Path, counts: dict[str, int] | None = None, seed: int = 2, h: int = H, w: int = W
) -> dict[str, dict[str, np.ndarray]]:
    """cityscapes/{leftImg8bit,gtFine}/<split>/<city>/<city>_000000_NNNNNN_* with the release's decoy files
    (_color, _instanceIds, _polygons.json); returns {split: {name: expected train ids}}."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, n in (counts or {"train": 3, "val": 2}).items():
        out[split] = {}
        for i in range(n):
            city = ("aachen", "bochum")[i % 2]
            name = f"{city}_000000_{i:06d}"
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_rgb(rng, h, w)).save(img_dir / f"{name}_leftImg8bit.png")
            ids = _blocks(rng, list(range(34)), h, w)
            assert cv2.imwrite(str(gt_dir / f"{name}_gtFine_labelIds.png"), ids)
            Image.fromarray(_rgb(rng, h, w)).save(gt_dir / f"{name}_gtFine_color.png")
            assert cv2.imwrite(str(gt_dir / f"{name}_gtFine_instanceIds.png"), ids.astype(np.uint16) * 1000)
            (gt_dir / f"{name}_gtFine_polygons.json").write_text("{}")
            out[split][name] = expected_train_ids(ids, GTA_IDS)
    return out


def run_script(*args: str | Path) -> int:
    return prepare_data.main([str(a) for a in args] + ["--no-progress"])


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# ------------------------------------------------------------------------------------------ id maps
def test_id_maps_equal_the_spec_tables():
    assert CITYSCAPES_ID_TO_TRAINID == {k: v for v, k in enumerate(GTA_IDS)}
    assert SYNTHIA_ID_TO_TRAINID == {k: v for v, k in enumerate(SYNTHIA_IDS)}
    ids = np.arange(256, dtype=np.uint8)
    got = gta5.to_train_ids(ids)
    assert got.dtype == np.uint8 and (got == expected_train_ids(ids, GTA_IDS)).all()
    assert (cityscapes.to_train_ids(ids) == got).all()
    assert (got != 255).sum() == 19  # everything else (void, parking, caravan, ...) is ignored
    ids16 = np.array([[3, 21, 11, 0], [13, 22, 300, 65535]], np.uint16)
    assert map_to_train_ids(ids16, SYNTHIA_ID_TO_TRAINID).tolist() == [[0, 3, 18, 255], [255] * 4]


def test_cityscapes_map_agrees_with_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    ref = {lab.id: lab.trainId for lab in labels.labels if lab.id >= 0 and lab.trainId not in (255, -1)}
    assert ref == CITYSCAPES_ID_TO_TRAINID


def test_gta_palette_label_is_read_as_indices_not_colours(tmp_path):
    ids = np.array([[7, 26, 0, 33]] * 2, np.uint8)
    save_palette_png(tmp_path / "l.png", ids)
    assert Image.open(tmp_path / "l.png").mode == "P"
    assert (gta5.read_raw_label(tmp_path / "l.png") == ids).all()
    assert gta5.to_train_ids(gta5.read_raw_label(tmp_path / "l.png")).tolist() == [[0, 13, 255, 18]] * 2
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb.png is a RGB image.*palette"):
        gta5.read_raw_label(tmp_path / "rgb.png")


def test_synthia_class_id_is_the_r_channel(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.array([[3, 8, 11, 1]] * 2, np.uint16)
    save_synthia_label(tmp_path / "l.png", ids, rng)
    raw = synthia.read_raw_label(tmp_path / "l.png")
    assert raw.dtype == np.uint16 and raw.shape == (2, 4, 3)
    assert (raw[..., 2] == ids).all()  # cv2 order B, G, R: R (the class id) is index 2 == [-1]
    assert synthia.to_train_ids(raw).tolist() == [[0, 13, 18, 10]] * 2
    assert (np.asarray(Image.open(tmp_path / "l.png"))[..., 0] != ids).all()  # PIL keeps the high byte only
    assert synthia.to_train_ids(ids).tolist() == [[0, 13, 18, 10]] * 2  # single channel = ids


# ------------------------------------------------------------------------------------------ the script
def test_prepare_gta5_outputs_checks_and_summary(tmp_path, capsys):
    root = tmp_path / "gta"
    exp = make_gta(root, n=4)
    rng = np.random.default_rng(9)
    # 00002: label 2 px shorter and 4 px narrower than its image (the GTA5 quirk) -> resized, reported
    small = _blocks(rng, GTA_IDS, H - 2, W - 4)
    save_palette_png(root / "labels" / "00002.png", small)
    exp["00002"] = cv2.resize(expected_train_ids(small, GTA_IDS), (W, H), interpolation=cv2.INTER_NEAREST)
    (root / "labels" / "00003.png").unlink()  # image without label
    (root / "images" / "00004.png").write_bytes(b"\x89PNG garbage")  # unreadable image
    save_palette_png(root / "labels" / "09999.png", small)  # label without image

    assert run_script("gta5", root, "--workers", "1") == 0
    out = capsys.readouterr().out
    lab = root / "labels_trainids"
    assert sorted(p.name for p in lab.iterdir()) == ["00001.png", "00002.png"]
    for name in ("00001", "00002"):
        got = read_png(lab / f"{name}.png")
        assert got.dtype == np.uint8 and got.shape == (H, W) and (got == exp[name]).all(), name

    stats = json.loads((root / "sample_class_stats.json").read_text())
    assert [s["file"] for s in stats] == ["labels_trainids/00001.png", "labels_trainids/00002.png"]
    for s in stats:
        hist = np.bincount(exp[Path(s["file"]).stem].ravel(), minlength=256)
        assert s["counts"] == {str(c): int(hist[c]) for c in range(19) if hist[c]}
    index = json.loads((root / "samples_with_class.json").read_text())
    for c, entries in index.items():
        for f, n in entries:
            assert int(next(s for s in stats if s["file"] == f)["counts"][c]) == n

    man = json.loads((root / "manifest.json").read_text())
    tr = man["splits"]["train"]
    assert man["dataset"] == "gta5" and tr["images"] == 4 and tr["prepared"] == 2
    assert [r["name"] for r in tr["resized"]] == ["00002"] and "60x30" in tr["resized"][0]["message"]
    assert {(s["name"], s["reason"]) for s in tr["skipped"]} == {
        ("00003", "no label"),
        ("00004", "unreadable image"),
    }
    assert tr["orphan_labels"] == ["labels/09999.png"]
    assert sum(tr["class_pixels"].values()) == sum(int((exp[n] != 255).sum()) for n in ("00001", "00002"))
    # the summary names every problem file
    assert "2 of 4 image/label pairs prepared, 1 label(s) resized, 2 pair(s) skipped" in out
    for needle in ("labels/00002.png is 60x30, image is 64x32", "no label", "images/00004.png", "09999.png"):
        assert needle in out, needle
    assert "road" in out and "P_rcs" in out


def test_prepare_synthia_in_parallel(tmp_path, capsys):
    root = tmp_path / "synthia"
    exp = make_synthia(root, n=3)
    assert run_script("synthia", root, "--workers", "2") == 0
    for name, e in exp.items():
        got = read_png(root / "GT" / "LABELS_trainids" / f"{name}.png")
        assert got.shape == (H, W) and (got == e).all()
    stats = json.loads((root / "sample_class_stats.json").read_text())
    assert [s["file"] for s in stats] == [f"GT/LABELS_trainids/{n}.png" for n in sorted(exp)]
    classes = {int(c) for s in stats for c in s["counts"]}
    assert classes and not classes & {9, 14, 16}  # SYNTHIA has no terrain, truck, train
    assert "3 of 3 image/label pairs prepared" in capsys.readouterr().out


def test_prepare_cityscapes_train_and_val(tmp_path):
    root = tmp_path / "cityscapes"
    exp = make_cityscapes(root)
    assert run_script("cityscapes", root, "--workers", "1") == 0
    for split, items in exp.items():
        for name, e in items.items():
            city = name.split("_")[0]
            got = read_png(root / "gtFine" / split / city / f"{name}_gtFine_labelTrainIds.png")
            assert (got == e).all(), name
    # statistics of the train split only (as the reference), keyed by the cityscapesscripts file names
    stats = json.loads((root / "sample_class_stats.json").read_text())
    assert [s["file"] for s in stats] == sorted(
        f"gtFine/train/{n.split('_')[0]}/{n}_gtFine_labelTrainIds.png" for n in exp["train"]
    )
    man = json.loads((root / "manifest.json").read_text())
    assert set(man["splits"]) == {"train", "val"} and man["splits"]["val"]["prepared"] == 2
    assert man["stats"]["split"] == "train"


def test_prepare_errors_name_the_path(tmp_path, capsys):
    assert run_script("gta5", tmp_path / "nowhere") == 1
    assert f"{tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    (tmp_path / "gta" / "images").mkdir(parents=True)
    assert run_script("gta5", tmp_path / "gta") == 1
    assert f"no folder {tmp_path / 'gta' / 'labels'}" in capsys.readouterr().err
    make_cityscapes(tmp_path / "cs", counts={"train": 1})
    assert run_script("cityscapes", tmp_path / "cs") == 1
    err = capsys.readouterr().err
    assert f"no folder {tmp_path / 'cs' / 'leftImg8bit' / 'val'}" in err and "--splits" in err
    assert run_script("cityscapes", tmp_path / "cs", "--splits", "train", "--workers", "1") == 0
    for p in (tmp_path / "cs" / "gtFine" / "train").rglob("*_labelIds.png"):
        p.unlink()
    assert run_script("cityscapes", tmp_path / "cs", "--splits", "train") == 1
    assert "_gtFine_labelIds.png" in capsys.readouterr().err

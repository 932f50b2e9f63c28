"""Tests for the procedural two-domain street-scene dataset (src/data/datasets/synthetic.py)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.data.classes import CITYSCAPES_CLASSES
from src.data.datasets import synthetic as syn
from src.data.datasets.synthetic import (
    BICYCLE,
    BUILDING,
    BUS,
    CAR,
    MOTORCYCLE,
    PERSON,
    RIDER,
    ROAD,
    SKY,
    TRAIN,
    TRUCK,
    VEG,
    ensure_synthetic_dataset,
    generate_synthetic_dataset,
    render_scene,
)

H, W = 64, 128


def _render(domain: str, i: int, seed: int = 0, gap: float = 1.0, h: int = H, w: int = W):
    return render_scene(np.random.default_rng([seed, i]), domain=domain, height=h, width=w, gap=gap)


@pytest.fixture(scope="module")
def source_counts() -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts and per-image presence of every class over 200 source images."""
    counts, present = np.zeros(256, np.int64), np.zeros(256, np.int64)
    for i in range(200):
        _, lbl = _render("source", i)
        b = np.bincount(lbl.ravel(), minlength=256)
        counts += b
        present += b > 0
    return counts, present


@pytest.fixture(scope="module")
def pairs() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """40 (source image, source label, target image, target label) pairs at 64x128."""
    out = []
    for i in range(40):
        out.append((*_render("source", i), *_render("target", 1000 + i)))
    return out


# ------------------------------------------------------------------------------------------------ rendering
@pytest.mark.parametrize("domain", ["source", "target"])
def test_render_is_deterministic_by_seed(domain: str) -> None:
    a_img, a_lbl = _render(domain, 3, seed=7)
    b_img, b_lbl = _render(domain, 3, seed=7)
    c_img, c_lbl = _render(domain, 3, seed=8)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lbl, b_lbl)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_lbl, c_lbl)


@pytest.mark.parametrize("domain", ["source", "target"])
@pytest.mark.parametrize("size", [(48, 96), (64, 128), (37, 53)])
def test_shapes_dtypes_and_label_values(domain: str, size: tuple[int, int]) -> None:
    for i in range(5):
        img, lbl = _render(domain, i, h=size[0], w=size[1])
        assert img.shape == (*size, 3) and img.dtype == np.uint8
        assert lbl.shape == size and lbl.dtype == np.uint8
        values = set(np.unique(lbl).tolist())
        assert values <= set(range(19)) | {255}
        if domain == "source":  # only the target camera's ego-vehicle hood is labelled ignore
            assert 255 not in values
        # every scene has road at the bottom centre and sky or building at the top
        assert lbl[-1, size[1] // 2] in (ROAD, 255)
        assert np.isin(lbl[0], (SKY, BUILDING, VEG, 5)).mean() > 0.5


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="domain"):
        render_scene(np.random.default_rng(0), domain="real", height=H, width=W)
    with pytest.raises(ValueError, match="gap"):
        render_scene(np.random.default_rng(0), domain="target", height=H, width=W, gap=-1)


def test_every_class_appears_in_200_source_images(source_counts) -> None:
    counts, present = source_counts
    missing = [CITYSCAPES_CLASSES[c] for c in range(19) if counts[c] == 0]
    assert not missing, f"classes never drawn: {missing}"
    # stuff classes are everywhere, the rarest things in a minority of the images (generator version 3
    # draws them about twice as often as version 2 did: 10 to 60 of 200 images; GTA5's rider is in ~20 %)
    for c in (ROAD, BUILDING, SKY, VEG, 1, 5, 7):
        assert present[c] >= 190, CITYSCAPES_CLASSES[c]
    for c in (TRAIN, RIDER, MOTORCYCLE, BICYCLE):
        assert 3 <= present[c] <= 80, CITYSCAPES_CLASSES[c]


def test_thing_classes_are_long_tailed(source_counts) -> None:
    counts, _ = source_counts
    f = counts[:19] / counts[:19].sum()
    rare = f[[RIDER, MOTORCYCLE, BICYCLE, TRAIN]]
    medium = f[[TRUCK, BUS]]
    assert f[CAR] > 3 * f[PERSON], "cars dominate the things"
    assert f[PERSON] > medium.max(), "persons are more frequent than trucks and buses"
    assert medium.min() > rare.max(), "trucks and buses are more frequent than the rare classes"
    assert rare.max() < f[CAR] / 20
    assert 0.02 < f[CAR] < 0.12  # GTA5: ~5 % of the pixels are cars


# --------------------------------------------------------------------------------------------- domain gap
def _class_means(pairs, idx_img: int, idx_lbl: int, cls: int) -> np.ndarray:
    pix = np.concatenate([p[idx_img][p[idx_lbl] == cls] for p in pairs])
    return pix.astype(np.float64).mean(0)


def test_target_palette_differs_from_source(pairs) -> None:
    dists = {}
    for c in (ROAD, BUILDING, VEG, SKY, CAR):
        dists[c] = np.linalg.norm(_class_means(pairs, 0, 1, c) - _class_means(pairs, 2, 3, c))
    assert dists[SKY] > 40 and dists[VEG] > 25, dists
    assert np.mean(list(dists.values())) > 25, dists
    # ... but not so far that nothing is left: the target sky is still the brightest stuff class
    sky_t = _class_means(pairs, 2, 3, SKY).mean()
    assert sky_t > _class_means(pairs, 2, 3, ROAD).mean() + 40


def _high_freq_energy(img: np.ndarray, mask: np.ndarray) -> float:
    """Median absolute Laplacian over pixels whose 5x5 neighbourhood is all in `mask`: 0 for flat
    shading (lane markings and windows are a minority of the pixels), > 0 for noise and texture."""
    lap = np.abs(cv2.Laplacian(img.mean(2).astype(np.float32), cv2.CV_32F))
    inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return float(np.median(lap[inner])) if inner.sum() > 20 else np.nan


def test_target_has_more_high_frequency_energy(pairs) -> None:
    for cls in (ROAD, SKY, BUILDING, VEG):
        src = np.nanmean([_high_freq_energy(p[0], p[1] == cls) for p in pairs])
        tgt = np.nanmean([_high_freq_energy(p[2], p[3] == cls) for p in pairs])
        assert tgt > 2 * src + 2.0, (CITYSCAPES_CLASSES[cls], src, tgt)


def test_target_horizon_and_object_sizes_differ(pairs) -> None:
    def road_top(lbl: np.ndarray) -> float:  # the vanishing point: the topmost road row, as a fraction
        rows = np.nonzero((lbl == ROAD).any(1))[0]
        return rows.min() / lbl.shape[0]

    src = np.median([road_top(p[1]) for p in pairs])
    tgt = np.median([road_top(p[3]) for p in pairs])
    assert src - tgt > 0.04, (src, tgt)  # the target camera is pitched down: its horizon sits higher
    assert syn.domain_style("target", 1.0).obj_scale >= 1.2 * syn.domain_style("source", 1.0).obj_scale


def test_gap_zero_renders_the_target_like_the_source() -> None:
    for i in range(3):
        s_img, s_lbl = _render("source", i)
        t_img, t_lbl = _render("target", i, gap=0.0)
        np.testing.assert_array_equal(s_img, t_img)
        np.testing.assert_array_equal(s_lbl, t_lbl)
    # the gap grows with `gap`: the target sky colour moves away from the source's monotonically
    sky = [syn.domain_style("target", g).colours["sky_top"][0] for g in (0.0, 0.5, 1.0)]
    d = [np.linalg.norm(s - sky[0]) for s in sky]
    assert d[0] == 0 < d[1] < d[2]
    np.testing.assert_allclose(d[1], d[2] / 2, rtol=1e-5)


def test_thing_gap_scales_only_the_thing_palettes_and_sizes(tmp_path: Path) -> None:
    src, full = syn.domain_style("source"), syn.domain_style("target", 1.0)
    no_things = syn.domain_style("target", 1.0, 0.0)
    for k in syn._SOURCE_COLOURS:
        expected = src.colours[k] if k in syn.THING_MATERIALS else full.colours[k]
        np.testing.assert_array_equal(no_things.colours[k], expected)
    assert "car" in syn.THING_MATERIALS and "road" not in syn.THING_MATERIALS
    assert no_things.obj_scale == src.obj_scale == 1.0 < full.obj_scale
    # every other difference is the full gap's
    assert (no_things.horizon, no_things.noise, no_things.texture, no_things.hood) == (
        full.horizon,
        full.noise,
        full.texture,
        full.hood,
    )
    same = syn.domain_style("target", 1.0, 1.0)  # thing_gap = gap is the default
    assert same.obj_scale == full.obj_scale
    assert all(np.array_equal(same.colours[k], full.colours[k]) for k in full.colours)
    np.testing.assert_array_equal(syn.domain_style("target", 0.0, 1.0).colours["road"], src.colours["road"])
    with pytest.raises(ValueError, match="thing_gap must be >= 0"):
        syn.domain_style("target", 1.0, -0.5)
    with pytest.raises(ValueError, match="thing_gap must be >= 0"):  # checked before anything is written
        generate_synthetic_dataset(tmp_path / "neg", **SMALL, thing_gap=-0.5)
    assert not (tmp_path / "neg").exists()
    # the manifest records thing_gap only when it is set (the default data's manifest is unchanged)
    root = generate_synthetic_dataset(tmp_path / "tg", **SMALL, thing_gap=0.0)
    params = json.loads((root / "manifest.json").read_text())["params"]
    assert params == {**SMALL, "gap": 1.0, "thing_gap": 0.0}
    e_img, _ = render_scene(syn._split_rng(5, "val", 1), domain="target", height=32, width=64, thing_gap=0.0)
    np.testing.assert_array_equal(_read(root / "val/images/00001.png"), e_img)


def test_palette_gap_scales_only_the_stuff_palettes(tmp_path: Path) -> None:
    src, full = syn.domain_style("source"), syn.domain_style("target", 1.0)
    s = syn.domain_style("target", 1.0, None, 1.5)
    for k in syn._SOURCE_COLOURS:
        if k in syn.THING_MATERIALS:  # the thing palettes follow thing_gap (here: gap)
            np.testing.assert_array_equal(s.colours[k], full.colours[k])
        else:  # 1.5x the way from the source colour to the target's (before the 0-255 clip)
            want = np.clip(src.colours[k] + 1.5 * (full.colours[k] - src.colours[k]), 0, 255)
            np.testing.assert_allclose(s.colours[k], want, atol=1e-3)
    assert (s.horizon, s.noise, s.obj_scale) == (full.horizon, full.noise, full.obj_scale)
    # gap 0 with a palette gap: the target's stuff colours only, no textures, camera or lighting changes
    only = syn.domain_style("target", 0.0, 0.0, 1.0)
    np.testing.assert_array_equal(only.colours["road"], full.colours["road"])
    assert (only.noise, only.texture, only.horizon) == (src.noise, src.texture, src.horizon)
    src2 = syn.domain_style("source", 1.0, 0.3, 1.5)  # the source ignores every gap
    assert all(np.array_equal(src2.colours[k], src.colours[k]) for k in src.colours)
    assert (src2.noise, src2.obj_scale, src2.horizon) == (src.noise, src.obj_scale, src.horizon)
    with pytest.raises(ValueError, match="palette_gap must be >= 0"):
        generate_synthetic_dataset(tmp_path / "neg", **SMALL, palette_gap=-1.0)
    root = generate_synthetic_dataset(tmp_path / "pg", **SMALL, thing_gap=0.3, palette_gap=1.5)
    params = json.loads((root / "manifest.json").read_text())["params"]
    assert params == {**SMALL, "gap": 1.0, "thing_gap": 0.3, "palette_gap": 1.5}
    e_img, e_lbl = render_scene(
        syn._split_rng(5, "val", 1), domain="target", height=32, width=64, thing_gap=0.3, palette_gap=1.5
    )
    np.testing.assert_array_equal(_read(root / "val/images/00001.png"), e_img)
    np.testing.assert_array_equal(_read(root / "val/labels/00001.png"), e_lbl)


def test_camera_gap_scales_only_the_camera_pose(tmp_path: Path) -> None:
    src, full = syn.domain_style("source"), syn.domain_style("target", 1.0)
    same_cam = syn.domain_style("target", 1.0, None, None, 0.0)  # the target's camera placed as the source's
    assert (same_cam.horizon, same_cam.cam_height) == (src.horizon, src.cam_height)
    assert (full.horizon, full.cam_height) != (src.horizon, src.cam_height)
    # every other difference is the full gap's
    fields = ("noise", "texture", "blur", "hood", "exposure", "obj_scale", "antialias")
    assert all(getattr(same_cam, f) == getattr(full, f) for f in fields)
    assert all(np.array_equal(same_cam.colours[k], full.colours[k]) for k in full.colours)
    # the camera alone: gap 0 with a camera gap moves the horizon and nothing else
    only = syn.domain_style("target", 0.0, 0.0, 0.0, 1.0)
    assert (only.horizon, only.cam_height) == (full.horizon, full.cam_height)
    assert (only.noise, only.texture, only.antialias) == (src.noise, src.texture, src.antialias)
    assert syn.domain_style("source", 1.0, None, None, 1.0).horizon == src.horizon  # the source ignores it
    with pytest.raises(ValueError, match="camera_gap must be >= 0"):
        generate_synthetic_dataset(tmp_path / "neg", **SMALL, camera_gap=-1.0)
    root = generate_synthetic_dataset(tmp_path / "cg", **SMALL, thing_gap=0.0, camera_gap=0.0)
    params = json.loads((root / "manifest.json").read_text())["params"]
    assert params == {**SMALL, "gap": 1.0, "thing_gap": 0.0, "camera_gap": 0.0}
    e_img, e_lbl = render_scene(
        syn._split_rng(5, "val", 1), domain="target", height=32, width=64, thing_gap=0.0, camera_gap=0.0
    )
    np.testing.assert_array_equal(_read(root / "val/images/00001.png"), e_img)
    np.testing.assert_array_equal(_read(root / "val/labels/00001.png"), e_lbl)
    plain, _ = render_scene(syn._split_rng(5, "val", 1), domain="target", height=32, width=64, thing_gap=0.0)
    assert not np.array_equal(plain, e_img)  # the camera moved


# ------------------------------------------------------------------------------------------- on-disk data
SMALL = dict(num_source=3, num_target=2, num_val=2, height=32, width=64, seed=5)


def _read(path: Path) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert arr is not None, path
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if arr.ndim == 3 else arr


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_generate_writes_folder_layout_and_manifest(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "syn", **SMALL, gap=0.8)
    assert root == (tmp_path / "syn").resolve()
    assert (root / "classes.txt").read_text().splitlines() == list(CITYSCAPES_CLASSES)
    man = json.loads((root / "manifest.json").read_text())
    assert man["version"] == syn.GENERATOR_VERSION
    assert man["params"] == {**SMALL, "gap": 0.8}
    assert man["counts"] == {"source": 3, "target": 2, "val": 2}
    assert man["splits"]["val"]["domain"] == "target"
    for split, n in man["counts"].items():
        images = sorted(p.name for p in (root / split / "images").iterdir())
        labels = sorted(p.name for p in (root / split / "labels").iterdir())
        assert images == labels == [f"{i:05d}.png" for i in range(n)]
        for i in range(n):
            img, lbl = _read(root / split / "images" / images[i]), _read(root / split / "labels" / labels[i])
            assert img.shape == (32, 64, 3) and lbl.shape == (32, 64) and lbl.dtype == np.uint8
            # the files are exactly render_scene(rng(seed, split, index)); val comes from the target domain
            domain = "source" if split == "source" else "target"
            e_img, e_lbl = render_scene(
                syn._split_rng(5, split, i), domain=domain, height=32, width=64, gap=0.8
            )
            np.testing.assert_array_equal(img, e_img)
            np.testing.assert_array_equal(lbl, e_lbl)
    # no temporary folder is left next to ROOT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_splits_draw_different_scenes(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "syn", **SMALL)
    t, v = _read(root / "target/labels/00000.png"), _read(root / "val/labels/00000.png")
    assert not np.array_equal(t, v)


def test_ensure_is_idempotent_and_regenerates_on_change(tmp_path: Path, caplog) -> None:
    root = ensure_synthetic_dataset(tmp_path / "syn", **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in _files(root)}
    os.utime(root / "source/images/00000.png", ns=(1, 1))  # any rewrite would change this stamp
    stamps[root / "source/images/00000.png"] = 1
    assert ensure_synthetic_dataset(tmp_path / "syn", **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in _files(root)} == stamps

    # a missing file triggers regeneration, and the log says why
    (root / "val/labels/00001.png").unlink()
    with caplog.at_level("INFO", logger=syn.__name__):
        ensure_synthetic_dataset(tmp_path / "syn", **SMALL)
    assert (root / "val/labels/00001.png").is_file()
    assert "00001.png is missing" in caplog.text
    assert (root / "source/images/00000.png").stat().st_mtime_ns != 1

    # changed parameters trigger regeneration too
    caplog.clear()
    with caplog.at_level("INFO", logger=syn.__name__):
        ensure_synthetic_dataset(tmp_path / "syn", **{**SMALL, "num_val": 3})
    assert "num_val 2 -> 3" in caplog.text
    assert json.loads((root / "manifest.json").read_text())["counts"]["val"] == 3
    assert (root / "val/images/00002.png").is_file()


def test_interrupted_generation_leaves_no_cache(tmp_path: Path, monkeypatch) -> None:
    root = ensure_synthetic_dataset(tmp_path / "syn", **SMALL)
    before = {p: p.read_bytes() for p in _files(root)}
    calls = []

    def failing(job):
        calls.append(job)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(job)

    real = syn._render_and_write
    monkeypatch.setattr(syn, "_render_and_write", failing)
    with pytest.raises(KeyboardInterrupt):  # regeneration with other parameters is interrupted ...
        ensure_synthetic_dataset(tmp_path / "syn", **{**SMALL, "seed": 6})
    # ... and leaves the previous cache untouched and no temporary folder behind
    assert {p: p.read_bytes() for p in _files(root)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]
    calls.clear()
    with pytest.raises(KeyboardInterrupt):  # a first generation that is interrupted leaves nothing
        generate_synthetic_dataset(tmp_path / "fresh", **SMALL)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_synthetic_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert (ensure_synthetic_dataset(tmp_path / "empty", **SMALL) / "manifest.json").is_file()


def test_files_do_not_depend_on_num_workers(tmp_path: Path) -> None:
    params = dict(num_source=4, num_target=3, num_val=3, height=24, width=48, seed=1)
    a = generate_synthetic_dataset(tmp_path / "a", **params, num_workers=1)
    b = generate_synthetic_dataset(tmp_path / "b", **params, num_workers=2)
    fa, fb = _files(a), _files(b)
    assert [p.relative_to(a) for p in fa] == [p.relative_to(b) for p in fb]
    for pa, pb in zip(fa, fb):
        if pa.suffix == ".png":
            np.testing.assert_array_equal(_read(pa), _read(pb))


def test_cli_generates_then_reuses(tmp_path: Path, capsys) -> None:
    path = Path(__file__).resolve().parents[2] / "scripts" / "make_synthetic.py"
    spec = importlib.util.spec_from_file_location("make_synthetic", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = [str(tmp_path / "cli"), *"--num-source 2 --num-target 1 --num-val 1".split()]
    args += "--height 24 --width 48 --seed 3 --gap 0.5".split()
    assert mod.main(args) == 0
    man = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert man["params"] == dict(num_source=2, num_target=1, num_val=1, height=24, width=48, seed=3, gap=0.5)
    stamp = (tmp_path / "cli/source/images/00001.png").stat().st_mtime_ns
    assert mod.main(args) == 0
    assert (tmp_path / "cli/source/images/00001.png").stat().st_mtime_ns == stamp
    assert "ready at" in capsys.readouterr().out


@pytest.mark.slow
def test_default_dataset_generates_fast(tmp_path: Path) -> None:
    import time

    t0 = time.perf_counter()
    generate_synthetic_dataset(tmp_path / "syn")
    assert time.perf_counter() - t0 < 30

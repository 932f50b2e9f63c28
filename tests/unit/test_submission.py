"""Benchmark-server submissions (src/submission.py): the published rules written out here by hand (ACDC:
labelTrainIds/ with train ids; Dark Zurich: labelTrainIds/, labelTrainIds_invalid/, confidence/; Cityscapes:
label ids), the test images found in the release layouts, and the zip check catching each broken rule."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.submission import (
    BENCHMARKS,
    TRAINID_TO_LABELID,
    check_submission,
    encode,
    find_test_images,
    result_name,
    write_result,
    zip_folder,
)
from tests.unit.test_adverse_datasets import make_acdc, make_dark_zurich
from tests.unit.test_prepare_data import GTA_IDS, make_cityscapes

# Cityscapes label ids of the 19 train ids (daformer_mic.md §6 table), written out again
LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    make_acdc(root / "acdc", counts={"train": 1, "test": 2})
    make_dark_zurich(root / "dark_zurich", counts={"train": 1, "test": 3})
    make_cityscapes(root / "cityscapes", counts={"train": 1, "test": 2})
    return root


def test_label_id_map_is_the_inverse_of_the_train_id_map():
    assert LABEL_IDS == GTA_IDS
    assert TRAINID_TO_LABELID[:19].tolist() == LABEL_IDS and TRAINID_TO_LABELID[255] == 0
    ids = np.arange(19, dtype=np.uint8).reshape(1, 19)
    assert encode(BENCHMARKS["cityscapes"], ids).tolist() == [LABEL_IDS]
    assert encode(BENCHMARKS["acdc"], ids).tolist() == [list(range(19))]  # ACDC / Dark Zurich: train ids
    assert encode(BENCHMARKS["dark_zurich"], ids).tolist() == [list(range(19))]


def test_test_images_are_found_in_the_release_layouts(releases):
    b, acdc = find_test_images(releases / "acdc")  # the root: all four conditions' test folders
    assert b.name == "acdc" and len(acdc) == 8 and all(p.parent.parent.name == "test" for p in acdc)
    assert not any("_ref" in str(p) for p in acdc)  # test_ref references are not test images
    b, night = find_test_images(releases / "acdc" / "rgb_anon" / "night" / "test")
    assert b.name == "acdc" and len(night) == 2
    b, dz = find_test_images(releases / "dark_zurich")
    assert b.name == "dark_zurich" and len(dz) == 3 and all(p.parents[1].name == "night" for p in dz)
    b, cs = find_test_images(releases / "cityscapes", "cityscapes")
    assert b.name == "cityscapes" and len(cs) == 2
    assert result_name(BENCHMARKS["acdc"], acdc[0]) == "GOPR0475_frame_000001.png"  # fog/test/GOPR0475/...
    with pytest.raises(ValueError, match=r"holds no ACDC test image \(rgb_anon/<condition>/test/"):
        find_test_images(releases / "dark_zurich", "acdc")
    with pytest.raises(ValueError, match=r"cannot tell the benchmark.*found ACDC and Dark Zurich"):
        find_test_images(releases)
    with pytest.raises(FileNotFoundError, match=r"input .*missing does not exist"):
        find_test_images(releases / "missing")


def _export(b, images, tmp_path, rng, invalid_below=None):
    out = tmp_path / b.name
    for p in images:
        ids = rng.integers(0, 19, (64, 128)).astype(np.uint8)
        write_result(b, out, p, rng.random((64, 128)), ids, invalid_below=invalid_below)
    return zip_folder(b, out, tmp_path / f"{b.name}.zip")


def test_dark_zurich_zip_has_the_three_folders_and_a_16_bit_confidence(releases, tmp_path):
    b, images = find_test_images(releases / "dark_zurich")
    rng = np.random.default_rng(0)
    p_max = rng.random((64, 128))
    ids = rng.integers(0, 19, (64, 128)).astype(np.uint8)
    name = write_result(b, tmp_path / "dz", images[0], p_max, ids, invalid_below=0.5)
    assert name == images[0].name.replace("_rgb_anon.png", ".png")
    lab = cv2.imread(str(tmp_path / "dz" / "labelTrainIds" / name), cv2.IMREAD_UNCHANGED)
    inv = cv2.imread(str(tmp_path / "dz" / "labelTrainIds_invalid" / name), cv2.IMREAD_UNCHANGED)
    conf = cv2.imread(str(tmp_path / "dz" / "confidence" / name), cv2.IMREAD_UNCHANGED)
    assert (lab == ids).all() and conf.dtype == np.uint16 and np.abs(conf / 65535 - p_max).max() < 1e-4
    assert (inv[p_max < 0.5] == 255).all() and (inv[p_max >= 0.5] == ids[p_max >= 0.5]).all()
    zip_path = _export(b, images, tmp_path, rng)
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
    assert {n.split("/")[0] for n in names} == {"labelTrainIds", "labelTrainIds_invalid", "confidence"}
    assert len(names) == 3 * 3
    assert check_submission(b, zip_path, images, {result_name(b, p): (128, 64) for p in images}) == []


def test_acdc_and_cityscapes_zips_conform(releases, tmp_path):
    rng = np.random.default_rng(1)
    b, images = find_test_images(releases / "acdc")
    zip_path = _export(b, images, tmp_path, rng)
    with zipfile.ZipFile(zip_path) as z:
        assert sorted(z.namelist()) == sorted(f"labelTrainIds/{result_name(b, p)}" for p in images)
    assert check_submission(b, zip_path, images) == []
    b, images = find_test_images(releases / "cityscapes", "cityscapes")
    zip_path = _export(b, images, tmp_path, rng)
    with zipfile.ZipFile(zip_path) as z:
        a = cv2.imdecode(np.frombuffer(z.read(z.namelist()[0]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(a).tolist()) <= set(LABEL_IDS) and check_submission(b, zip_path, images) == []


def test_the_check_catches_each_broken_rule(releases, tmp_path):
    b, images = find_test_images(releases / "acdc")

    def zip_with(files: dict[str, np.ndarray]) -> Path:
        p = tmp_path / "bad.zip"
        with zipfile.ZipFile(p, "w") as z:
            for n, a in files.items():
                z.writestr(n, cv2.imencode(".png", a)[1].tobytes())
        return p

    ok = {f"labelTrainIds/{result_name(b, p)}": np.zeros((64, 128), np.uint8) for p in images}
    sizes = {result_name(b, p): (128, 64) for p in images}
    assert check_submission(b, zip_with(ok), images, sizes) == []
    first = next(iter(ok))
    cases = {
        "top-level folders": {k.replace("labelTrainIds/", "labelIds/"): v for k, v in ok.items()},
        "missing": dict(list(ok.items())[1:]),
        "are not train ids": {**ok, first: np.full((64, 128), 26, np.uint8)},  # a label id (car)
        "the image is 128x64": {**ok, first: np.zeros((32, 64), np.uint8)},
        "not a single-channel uint8 PNG": {**ok, first: np.zeros((64, 128, 3), np.uint8)},
    }
    for what, files in cases.items():
        problems = check_submission(b, zip_with(files), images, sizes)
        assert any(what in p for p in problems), (what, problems)

"""Bad input that used to pass silently or end in a traceback (issue 16, section 3, the data rows).

Every test writes its own tiny files: 16-bit labels, labels with ids beyond the classes file, JPEGs with an
EXIF rotation, classes files with a blank line or a duplicate, empty / truncated / mis-sized / colour
files; the start-up check and its cache; errors from data-loader workers; class lists by name; rare-class
statistics on first use.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

import src.data.check as check_mod
from src.data.check import CHECK_FILE, jpeg_header, png_header
from src.data.classes import (
    CITYSCAPES_CLASSES,
    RARE_CLASSES,
    SYNTHIA_SEQ12_CLASSES,
    THING_CLASSES,
    VIPER15_CLASSES,
    read_classes_file,
    resolve_class_list,
)
from src.data.datamodule import EvalDataset, UDADataModule
from src.data.datasets.folder import FolderDataset, read_image, read_label
from src.data.errors import DataError, DataReadError
from src.data.rare_class_sampling import SAMPLES_WITH_CLASS_FILE, STATS_FILE, compute_class_stats
from src.data.transforms import EvalTransform
from src.uda.video.module import build_module
from src.utils.cli import one_line, readable_errors
from tests.conftest import compose_cfg

H, W = 24, 32


def _label(seed: int = 0, num_classes: int = 3) -> np.ndarray:
    lab = np.random.default_rng(seed).integers(0, num_classes, (H, W)).astype(np.uint8)
    lab[0, :4] = 255
    return lab


def _split(root: Path, n: int = 3, *, labels: bool = True, num_classes: int = 3, ext: str = ".png") -> Path:
    """A folder split of n valid image / label pairs (a, b, c, ...)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    if labels:
        (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        s = "abcdefgh"[i]
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "images" / f"{s}{ext}")
        if labels:
            Image.fromarray(_label(i, num_classes)).save(root / "labels" / f"{s}.png")
    return root


def _classes(path: Path, names=("sky", "road", "car")) -> Path:
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def _module(tmp_path: Path, names=("sky", "road", "car"), **kw) -> UDADataModule:
    """A data module on three folder splits of tiny files (workers off) and a classes file."""
    src, tgt, val = (_split(tmp_path / s, num_classes=len(names)) for s in ("src", "tgt", "val"))
    f = _classes(tmp_path / "classes.txt", names)
    return UDADataModule(
        source=lambda: FolderDataset(src, key="data.source_dir"),
        target=lambda: FolderDataset(tgt, labels=False, key="data.target_dir"),
        val=lambda: FolderDataset(val, key="data.val_dir"),
        num_classes=len(names), class_names=list(names), classes_file=str(f), crop_size=(16, 16),
        batch_size=1, num_workers=0, **kw,
    )  # fmt: skip


# ---------------------------------------------------------------- 16-bit labels
def test_16_bit_label_with_values_above_255_names_the_file_and_values(tmp_path):
    dm = _module(tmp_path)
    lab = _label().astype(np.uint16)
    lab[3, 3], lab[4, 4] = 257, 65535  # wrapped to 1 and 255 before
    bad = tmp_path / "src" / "labels" / "b.png"
    assert cv2.imwrite(str(bad), lab)
    with pytest.raises(DataError, match=r"label .*src/labels/b.png is a 16-bit PNG .*\(257, 65535\)"):
        read_label(bad)
    with pytest.raises(DataError, match=r"src/labels/b.png is a 16-bit PNG .*257, 65535") as e:
        dm.setup("fit")
    assert "\n" not in str(e.value)
    # a 16-bit label whose values all fit in 8 bits is read losslessly
    assert cv2.imwrite(str(bad), _label(1).astype(np.uint16))
    np.testing.assert_array_equal(read_label(bad), _label(1))
    _module(tmp_path / "ok").setup("fit")


# ---------------------------------------------------------------- ids beyond the classes
def test_label_ids_beyond_the_classes_file_fail_at_start_up(tmp_path):
    dm = _module(tmp_path)
    lab = _label()
    lab[5, 5], lab[6, 6] = 7, 9
    Image.fromarray(lab).save(tmp_path / "val" / "labels" / "c.png")  # a validation file: found at start-up
    with pytest.raises(DataError) as e:
        dm.setup("fit")
    msg = str(e.value)
    assert "val/labels/c.png" in msg and "id(s) 7, 9" in msg and str(tmp_path / "classes.txt") in msg
    assert "0..2 and 255" in msg and "\n" not in msg


def test_unchecked_datasets_name_the_file_of_a_bad_id_when_it_is_read(tmp_path):
    """Datasets without a start-up check (streamed splits, other classes): the loader names the file."""
    _split(tmp_path)
    lab = _label()
    lab[1, 1] = 7
    Image.fromarray(lab).save(tmp_path / "labels" / "a.png")
    ds = EvalDataset(FolderDataset(tmp_path), EvalTransform(), num_classes=3, classes_file="my/classes.txt")
    with pytest.raises(DataError, match=r"labels/a.png holds id\(s\) 7.*my/classes.txt \(3 classes\)"):
        ds[0]
    assert ds[1]["gt"].shape == (H, W)  # 255 is never an error


# ---------------------------------------------------------------- EXIF rotation
def _exif_jpeg(path: Path, rgb: np.ndarray, orientation: int = 6) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: rotate 90° clockwise to display
    Image.fromarray(rgb).save(path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("h, w", [(W, W), (H, W)])
def test_jpeg_with_exif_rotation_is_read_as_stored(tmp_path, h, w):
    """Read as stored, like its label (mmcv's color_ignore_orientation): neither rotated (a square pair
    mismatched) nor blamed on the label's size (a non-square pair)."""
    _split(tmp_path, 1)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[: h // 2, : w // 2] = 255  # the top-left quadrant: rotated, it would be the top-right one
    (tmp_path / "images" / "a.png").unlink()
    _exif_jpeg(tmp_path / "images" / "a.jpg", rgb)
    Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / "labels" / "a.png")
    assert cv2.imread(str(tmp_path / "images" / "a.jpg")).shape[:2] == (w, h)  # OpenCV's default rotates
    ds = FolderDataset(tmp_path).check(3)
    img, lab = ds.load(0)
    assert img.shape[:2] == lab.shape == (h, w)
    assert img[: h // 2, : w // 2].mean() > 200 and img[: h // 2, w // 2 :].mean() < 50
    assert np.array_equal(read_image(tmp_path / "images" / "a.jpg"), img)


def test_streamed_images_are_read_without_exif_rotation_too(tmp_path):
    from src.data.streaming import FMT_IMAGE, decode

    rgb = np.zeros((H, W, 3), np.uint8)
    _exif_jpeg(tmp_path / "a.jpg", rgb)
    assert decode((tmp_path / "a.jpg").read_bytes(), FMT_IMAGE).shape == (H, W, 3)


# ---------------------------------------------------------------- classes files
def test_classes_file_with_a_blank_line_or_a_duplicate_names_the_line(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("sky\nroad\n\ncar\n")
    with pytest.raises(DataError, match=rf"classes file {f}, line 3 is blank.*ids after a blank line"):
        read_classes_file(str(f))
    f.write_text("sky\nroad\ncar\nRoad\n")
    with pytest.raises(DataError, match=rf"classes file {f}, line 4: 'Road' repeats line 2"):
        read_classes_file(str(f))
    f.write_text("# my classes\nsky\nroad\ncar\n\n\n")  # a comment and trailing empty lines are fine
    assert read_classes_file(str(f)) == ("sky", "road", "car")


def test_a_bad_classes_file_is_one_line_at_the_command_line(tmp_path, capsys, monkeypatch):
    """The classes file is read while the config resolves (OmegaConf wraps the error): one line still."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    (tmp_path / "classes.txt").write_text("sky\n\nroad\n")
    cfg = compose_cfg("train", ["data=folder", "data.source_dir=a", "data.target_dir=b", "data.val_dir=c",
                                f"data.classes_file={tmp_path / 'classes.txt'}"])  # fmt: skip

    @readable_errors
    def run():
        OmegaConf.to_container(cfg, resolve=True)

    with pytest.raises(SystemExit):
        run()
    err = capsys.readouterr().err
    assert (
        err == f"error: classes file {tmp_path / 'classes.txt'}, line 2 is blank: " + err.split("blank: ")[1]
    )
    assert err.count("\n") == 1


# ---------------------------------------------------------------- corrupt, empty, truncated, mis-sized
def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _save(array: np.ndarray, path: Path, *args, **kwargs) -> None:
    Image.fromarray(array).save(path, *args, **kwargs)


BAD_FILES = {
    "empty image": (lambda r: (r / "images" / "b.png").write_bytes(b""), r"image .*images/b.png is empty"),
    "truncated png": (lambda r: _truncate(r / "images" / "b.png"), r"images/b.png: truncated PNG"),
    "truncated label": (lambda r: _truncate(r / "labels" / "b.png"), r"labels/b.png is truncated"),
    "garbage image": (lambda r: (r / "images" / "b.png").write_bytes(b"not an image at all"),
                      r"images/b.png is neither a PNG nor a JPEG"),
    "mis-sized label": (lambda r: _save(np.zeros((H, W + 2), np.uint8), r / "labels" / "b.png"),
                        rf"labels/b.png is {W + 2}x{H} but image .*b.png is {W}x{H}; resize the label"),
    "colour label": (lambda r: Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(r / "labels" / "b.png"),
                     r"labels/b.png has 3 channels"),
    "palette label": (lambda r: Image.fromarray(np.zeros((H, W), np.uint8), "P").save(r / "labels" / "b.png"),
                      r"labels/b.png is a palette PNG"),
    "1-bit label": (lambda r: Image.fromarray(np.zeros((H, W), bool)).save(r / "labels" / "b.png"),
                    r"labels/b.png is a 1-bit PNG"),
    "jpeg label": (lambda r: Image.fromarray(np.zeros((H, W), np.uint8)).save(r / "labels" / "b.png", "JPEG"),
                   r"labels/b.png is not a PNG file"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_found_at_start_up_naming_the_file(tmp_path, case):
    make, pattern = BAD_FILES[case]
    dm = _module(tmp_path)
    make(tmp_path / "src")
    with pytest.raises(DataError, match=pattern) as e:
        dm.setup("fit")
    assert "\n" not in str(e.value)


def test_truncated_jpeg_is_found_and_good_jpegs_pass(tmp_path):
    root = _split(tmp_path, 2, ext=".jpg")
    _exif_jpeg(
        root / "images" / "c.jpg", np.zeros((H, W, 3), np.uint8)
    )  # EXIF (with its own segments) is fine
    Image.fromarray(_label()).save(root / "labels" / "c.png")
    assert jpeg_header((root / "images" / "a.jpg").read_bytes())[:3] == (W, H, 3)
    FolderDataset(root).check(3)
    _truncate(root / "images" / "a.jpg", 0.7)  # OpenCV would decode it, grey-filled, with a warning only
    with pytest.raises(DataReadError, match=r"images/a.jpg: truncated JPEG"):
        FolderDataset(root).check(3)


def test_several_problems_are_reported_together(tmp_path):
    dm = _module(tmp_path)
    (tmp_path / "src" / "images" / "a.png").write_bytes(b"")
    (tmp_path / "src" / "labels" / "c.png").write_bytes(b"")
    with pytest.raises(
        DataError, match=r"data.source_dir=.*src: 2 problems: image .*a.png is empty.*; label .*c.png"
    ):
        dm.setup("fit")


def test_the_check_is_cached_and_repeated_for_changed_files(tmp_path, monkeypatch):
    root = _split(tmp_path, 3)
    FolderDataset(root).check(3)
    manifest = json.loads((root / CHECK_FILE).read_text())
    assert sorted(manifest["files"]) == [f"{d}/{s}.png" for d in ("images", "labels") for s in "abc"]
    seen = []
    real = check_mod.label_info
    monkeypatch.setattr(check_mod, "label_info", lambda p, size: seen.append(p.name) or real(p, size))
    FolderDataset(root).check(3)
    assert seen == []  # every file cached
    Image.fromarray(_label(5)).save(root / "labels" / "b.png")  # changed: size or mtime differ
    os.utime(root / "labels" / "b.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    FolderDataset(root).check(3)
    assert seen == ["b.png"]
    # ids are checked against the run's classes on every start, from the cache
    with pytest.raises(DataError, match=r"holds id\(s\) 2"):
        FolderDataset(root).check(2)
    assert seen == ["b.png"]


def test_a_bad_file_is_not_cached_and_is_checked_again(tmp_path):
    root = _split(tmp_path, 2)
    (root / "images" / "a.png").write_bytes(b"")
    with pytest.raises(DataError):
        FolderDataset(root).check(3)
    assert "images/a.png" not in json.loads((root / CHECK_FILE).read_text())["files"]
    _split(tmp_path, 2)  # fixed
    FolderDataset(root).check(3)
    assert "images/a.png" in json.loads((root / CHECK_FILE).read_text())["files"]


def test_headers_give_the_sizes_as_stored(tmp_path):
    Image.fromarray(np.zeros((H, W), np.uint16)).save(tmp_path / "a.png")
    assert png_header((tmp_path / "a.png").read_bytes()[:32])[:3] == (W, H, 16)
    with pytest.raises(ValueError, match="not a PNG"):
        png_header(b"GIF89a" + bytes(30))


# ---------------------------------------------------------------- errors in data-loader workers
class _Unreadable:
    """A dataset whose file went bad after the start-up check."""

    def __init__(self, root: Path) -> None:
        self.ds = FolderDataset(root)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.ds.load(i)


def test_worker_errors_come_out_as_the_library_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root = _split(tmp_path, 1)
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(root / "labels" / "a.png")

    @readable_errors
    def run():
        next(iter(DataLoader(_Unreadable(root), num_workers=1, collate_fn=lambda b: b)))

    with pytest.raises(SystemExit):
        run()
    err = capsys.readouterr().err
    assert err == (
        f"error: label {root / 'labels' / 'a.png'} is {W + 1}x{H} but image {root / 'images' / 'a.png'} is "
        f"{W}x{H}; resize the label (nearest) to the image size\n"
    )
    with pytest.raises(DataError) as e:  # the exception itself reads the same in the main process
        next(iter(DataLoader(_Unreadable(root), num_workers=1, collate_fn=lambda b: b)))
    assert str(e.value) == err[len("error: ") : -1] and "Original Traceback" in e.value.worker_traceback
    (root / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(60))  # undecodable in the worker

    class Raw(_Unreadable):
        def __getitem__(self, i):
            return read_image(self.ds.items[i][0])

    with pytest.raises(OSError) as e:
        next(iter(DataLoader(Raw(root), num_workers=1, collate_fn=lambda b: b)))
    assert one_line(e.value) == (
        f"cannot read image {root / 'images' / 'a.png'}: the file is missing, empty or corrupt; re-copy or "
        f"delete it"
    )


# ---------------------------------------------------------------- class lists by name
def test_class_sets_give_the_cityscapes_ids_on_the_19_classes():
    assert resolve_class_list("things", CITYSCAPES_CLASSES, key="k") == THING_CLASSES
    assert resolve_class_list("rare", CITYSCAPES_CLASSES, key="k") == RARE_CLASSES
    assert THING_CLASSES == (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    assert RARE_CLASSES == (3, 4, 5, 6, 12, 15, 16, 17, 18)


def test_class_sets_on_the_video_protocols():
    # the 15-class VIPER ids of DAFormer's things: the explicit list of conf/experiment/mic_viper.yaml
    assert resolve_class_list("things", VIPER15_CLASSES, key="k") == (4, 5, 9, 10, 11, 12, 13, 14)
    assert resolve_class_list("things", SYNTHIA_SEQ12_CLASSES, key="k") == (5, 6, 9, 10, 11)
    assert resolve_class_list("rare", SYNTHIA_SEQ12_CLASSES, key="k") == (3, 4, 5, 10)
    assert resolve_class_list("rare", VIPER15_CLASSES, key="k") == (3, 4, 12, 13, 14)


def test_class_lists_resolve_names_synonyms_and_ids():
    names = ["Road", "tree", "Pedestrian", "cars", "sky", "traffic_light", "background"]
    assert resolve_class_list("things", names, key="k") == (2, 3, 5)
    assert resolve_class_list("rare", names, key="k") == (5,)
    assert resolve_class_list([3, "pedestrian", "person", "car"], names, key="k") == (3, 2, 2, 3)
    assert resolve_class_list([1, 1, 4], names, key="k") == (1, 1, 4)  # repeats are weights (QuadMix)
    assert resolve_class_list(None, names, key="k") is None
    with pytest.raises(ValueError, match=r"k: class id 7 is not one of the 7 classes"):
        resolve_class_list([7], names, key="k")
    with pytest.raises(ValueError, match=r"k: 'truck' is not a class of"):
        resolve_class_list(["truck"], names, key="k")
    with pytest.raises(ValueError, match=r"k='stuff': not a class set \(things, rare\)"):
        resolve_class_list("stuff", names, key="k")


def test_an_unknown_class_name_asks_for_the_list(tmp_path):
    names = ["road", "widget", "car"]
    with pytest.raises(ValueError) as e:
        resolve_class_list("things", names, key="uda.fd.classes", classes_file="my/classes.txt")
    msg = str(e.value)
    assert msg == (
        "uda.fd.classes=things: the library does not know the class(es) 'widget' (id 1) of "
        "data.classes_file=my/classes.txt, so it cannot tell which classes are things; list their ids or "
        "names: uda.fd.classes=[<id or name>, ...]"
    )
    with pytest.raises(ValueError, match="none of the 2 classes .* is one of the things"):
        resolve_class_list("things", ["road", "sky"], key="uda.fd.classes")


def _cfg(tmp_path: Path, names, *overrides: str):
    _classes(tmp_path / "classes.txt", names)
    return compose_cfg("train", ["data=folder", "data.source_dir=a", "data.target_dir=b", "data.val_dir=c",
                                 f"data.classes_file={tmp_path / 'classes.txt'}", "model.head_channels=16",
                                 "paths.output_dir=/tmp/x", *overrides])  # fmt: skip


def test_methods_on_a_folder_dataset_use_its_own_thing_and_rare_ids(tmp_path):
    """A 7-class set: FD, FDM, CAM and QuadMix's paster resolve their classes by name, not Cityscapes ids."""
    names = ["road", "building", "vegetation", "person", "car", "bicycle", "sky"]
    cfg = _cfg(tmp_path, names, "uda=omuda", "uda/mix=quadmix")
    m = build_module(OmegaConf.to_container(cfg, resolve=True))
    assert m.fd.classes == (3, 4, 5)
    assert m.mask.masker.thing_classes == (3, 4, 5)
    assert m.mix.rare_paster.classes == [5]
    assert m.hparams["cfg"]["uda"]["fd"]["classes"] == "things"  # the checkpoint keeps the meaning
    mic = build_module(OmegaConf.to_container(_cfg(tmp_path, names, "uda=mic", "uda.fd.classes=[car,4,1]"),
                                              resolve=True))  # fmt: skip
    assert mic.fd.classes == (4, 4, 1)


def test_methods_on_a_set_with_unknown_names_stop_with_one_line(tmp_path):
    cfg = _cfg(tmp_path, ["floor", "widget", "gizmo"], "uda=mic")
    with pytest.raises(ValueError, match=r"^uda.fd.classes=things: the library does not know the class\(es\) "
                                         r"'floor' \(id 0\), 'widget' \(id 1\), 'gizmo'"):  # fmt: skip
        build_module(OmegaConf.to_container(cfg, resolve=True))
    m = build_module(OmegaConf.to_container(_cfg(tmp_path, ["floor", "widget", "gizmo"], "uda=mic",
                                                 "uda.fd.classes=[1,2]"), resolve=True))  # fmt: skip
    assert m.fd.classes == (1, 2)


def test_methods_on_the_synthetic_data_keep_the_cityscapes_ids():
    cfg = compose_cfg(
        "train", ["uda=omuda", "uda/mix=quadmix", "model.head_channels=16", "paths.output_dir=/x"]
    )
    m = build_module(OmegaConf.to_container(cfg, resolve=True))
    assert m.fd.classes == THING_CLASSES and m.mask.masker.thing_classes == THING_CLASSES
    assert m.mix.rare_paster.classes == list(RARE_CLASSES)


# ---------------------------------------------------------------- rare-class statistics on first use
def test_rare_class_statistics_are_computed_on_first_use_and_when_labels_change(tmp_path):
    dm = _module(tmp_path, rcs={"enabled": True, "min_pixels": 1})
    src = tmp_path / "src"
    assert not (src / STATS_FILE).exists()
    rcs = dm.rare_class_sampler()  # used to stop and ask for scripts/compute_class_stats.py
    assert rcs.classes == (0, 1, 2)
    files = sorted((src / "labels").glob("*.png"))
    expected = compute_class_stats(files, num_classes=3, root=src, progress=False)
    stats = json.loads((src / STATS_FILE).read_text())
    assert stats == [
        {"file": s["file"], "counts": {str(c): n for c, n in s["counts"].items()}} for s in expected
    ]
    assert (src / SAMPLES_WITH_CLASS_FILE).is_file()
    assert not [p for p in src.iterdir() if p.name.endswith(".tmp")]  # written atomically
    before = (src / STATS_FILE).stat().st_mtime_ns
    _module(tmp_path / "again", rcs={"enabled": True, "min_pixels": 1})  # untouched files: not rewritten
    dm2 = UDADataModule(source=lambda: FolderDataset(src), target=None, val=lambda: FolderDataset(src),
                        num_classes=3, rcs={"enabled": True, "min_pixels": 1}, num_workers=0)  # fmt: skip
    dm2.rare_class_sampler()
    assert (src / STATS_FILE).stat().st_mtime_ns == before
    lab = np.zeros((H, W), np.uint8)  # a label changes: the statistics follow
    Image.fromarray(lab).save(src / "labels" / "a.png")
    os.utime(src / "labels" / "a.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    dm3 = UDADataModule(source=lambda: FolderDataset(src), target=None, val=lambda: FolderDataset(src),
                        num_classes=3, rcs={"enabled": True, "min_pixels": 1}, num_workers=0)  # fmt: skip
    dm3.rare_class_sampler()
    assert json.loads((src / STATS_FILE).read_text())[0] == {"file": "labels/a.png", "counts": {"0": H * W}}


def test_compute_class_stats_script_names_the_classes_of_the_classes_file(tmp_path, capsys):
    import importlib.util

    root = _split(tmp_path / "data", 2, num_classes=4)
    lab = _label(0, 4)
    lab[2, 2] = 9
    Image.fromarray(lab).save(root / "labels" / "a.png")
    f = _classes(tmp_path / "classes.txt", ("sky", "road", "car", "widget"))
    spec = importlib.util.spec_from_file_location(
        "ccs", Path(__file__).parents[2] / "scripts" / "compute_class_stats.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(root), "--classes-file", str(f)]) == 0
    out, err = capsys.readouterr()
    rows = [ln.split()[1] for ln in out.splitlines()[2:]]
    assert rows == ["sky", "road", "car", "widget"] and "building" not in out
    assert "ids [9]" in err and "labels/a.png" in err
    assert mod.main([str(root)]) == 0
    assert "the 19 Cityscapes classes (no --classes-file given)" in capsys.readouterr().out


def test_cli_stops_at_start_up_with_one_line_naming_a_bad_validation_label(tmp_path):
    """`python -m src.train data=folder ...` with a label id beyond the classes file in the validation set:
    one line at start-up (before the first step), exit status 1, no traceback."""
    import subprocess
    import sys

    for s in ("src", "tgt", "val"):
        _split(tmp_path / s)
    _classes(tmp_path / "classes.txt")
    lab = _label()
    lab[2, 2] = 7
    Image.fromarray(lab).save(tmp_path / "val" / "labels" / "c.png")
    r = subprocess.run(
        [sys.executable, "-m", "src.train", "data=folder", f"data.source_dir={tmp_path / 'src'}",
         f"data.target_dir={tmp_path / 'tgt'}", f"data.val_dir={tmp_path / 'val'}",
         f"data.classes_file={tmp_path / 'classes.txt'}", "data.crop_size=[16,16]", "data.num_workers=0",
         "uda=source_only", "model=daformer_mitb0", "model.head_channels=16", "trainer.max_steps=1",
         "trainer.accelerator=cpu", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        f"error: label {tmp_path / 'val' / 'labels' / 'c.png'} holds id(s) 7, but the classes file "
        f"{tmp_path / 'classes.txt'} (3 classes) allows ids 0..2 and 255 (ignore): fix the label, map those "
        f"ids to 255, or add their classes to the classes file"
    ]
    assert "Traceback" not in r.stderr


def test_check_data_script_times_a_fresh_and_a_cached_check(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "check_data", Path(__file__).parents[2] / "scripts" / "check_data.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src, tgt = _split(tmp_path / "src"), _split(tmp_path / "tgt", labels=False)
    f = _classes(tmp_path / "classes.txt")
    assert mod.main([str(src), str(tgt), "--classes-file", str(f), "--fresh"]) == 0
    out = capsys.readouterr().out
    assert f"{src}: 6 files (images and labels) checked in" in out and f"{tgt}: 3 files (images)" in out
    assert "all: 9 files checked in" in out and (src / CHECK_FILE).is_file()
    (src / "labels" / "a.png").write_bytes(b"")
    assert mod.main([str(src), "--classes-file", str(f)]) == 1
    err = capsys.readouterr().err
    bad = src / "labels" / "a.png"
    assert err == f"error: label {bad} is empty (0 bytes): re-copy it, or delete it and its image\n"

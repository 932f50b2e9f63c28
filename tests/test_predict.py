"""`python -m src.predict`: folders, single images and videos -> colour PNGs, overlays, train-id maps; the
predictions are the model's (checked against a hand-run forward); bad input ends in one readable line.

The checkpoints are written directly from a freshly built module (a checkpoint of `src.train` holds the
same `state_dict` and `hyper_parameters.cfg`; tests/test_train.py covers the trained ones), so no test here
trains.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from src.data.transforms import to_tensor
from src.models.inference import slide_inference
from src.predict import Predictor, predict, resolve_input
from src.uda.module import UDAModule, load_module
from src.utils.cli import check_resume_checkpoint, readable_errors
from src.utils.visualize import colorize, overlay
from tests.conftest import ROOT, compose_cfg


def _module_cfg(*overrides: str) -> dict:
    cfg = compose_cfg("train", ["paths.output_dir=/tmp/x", "model.head_channels=16", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def _save_ckpt(path: Path, cfg: dict, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    module = UDAModule(cfg)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"cfg": cfg}}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A DACS checkpoint (student + EMA teacher) of a tiny MiT-B0."""
    return _save_ckpt(tmp_path_factory.mktemp("ckpt") / "dacs.ckpt", _module_cfg("uda=dacs"))


def _images(folder: Path, sizes=((48, 64), (40, 72)), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"im{i}.png")
        out.append(img)
    return out


def _cfg(ckpt_path, input_path, output, *extra: str):
    return compose_cfg("predict", [f"ckpt_path={ckpt_path}", f"input={input_path}", f"output={output}",
                                   "paths.output_dir=/tmp/x", "progress=false", *extra])  # fmt: skip


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_folder_prediction_writes_the_models_labels(ckpt, tmp_path):
    images = _images(tmp_path / "in")
    out = predict(_cfg(ckpt, tmp_path / "in", tmp_path / "out"))
    assert out["kind"] == "images" and out["count"] == 2
    module = load_module(ckpt)
    for i, img in enumerate(images):
        with torch.no_grad():  # hand-run: whole image, no rescale (synthetic data has val_scale null)
            expected = module.student.predict(to_tensor(img)[None]).argmax(1)[0].numpy().astype(np.uint8)
        ids = _read(tmp_path / "out" / "train_ids" / f"im{i}.png")
        assert ids.shape == img.shape[:2] and np.array_equal(ids, expected)
        assert np.array_equal(_read(tmp_path / "out" / "color" / f"im{i}.png"), colorize(expected))
        assert np.array_equal(
            _read(tmp_path / "out" / "overlay" / f"im{i}.png"), overlay(img, expected, alpha=0.5)
        )


def test_slide_mode_teacher_and_rescale(ckpt, tmp_path):
    img = _images(tmp_path / "in", sizes=((48, 64),))[0]
    module = load_module(ckpt)
    with torch.no_grad():
        x = to_tensor(img)[None]
        logits = slide_inference(module.teacher.model, x, num_classes=19, crop_size=(32, 32), stride=(16, 16))
    predict(_cfg(ckpt, tmp_path / "in" / "im0.png", tmp_path / "out", "network=teacher", "eval.mode=slide",
                 "eval.crop_size=[32,32]", "eval.stride=[16,16]", "save_train_ids=true"))  # fmt: skip
    assert np.array_equal(_read(tmp_path / "out" / "train_ids" / "im0.png"), logits.argmax(1)[0].numpy())
    # scale=[64,32] on 96x128: the network sees 32x43 (mmseg keep-ratio rule), the labels come back at 96x128
    big = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    p = Predictor(load_module(ckpt), scale=[64, 32])
    assert tuple(p.transform(big, None)["img"].shape[-2:]) == (32, 43) and p(big).shape == (96, 128)


def test_video_prediction(ckpt, tmp_path):
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    assert w.isOpened()
    for i in range(5):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    out = predict(_cfg(ckpt, video, tmp_path / "out", "video.every_n_frames=2"))
    assert out["kind"] == "video" and out["count"] == 3  # frames 0, 2, 4
    names = sorted(p.name for p in (tmp_path / "out" / "overlay").iterdir())
    assert names == ["clip_000000.png", "clip_000002.png", "clip_000004.png"]
    assert _read(tmp_path / "out" / "color" / "clip_000002.png").shape == (48, 64, 3)
    cap = cv2.VideoCapture(out["video"])
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 3
    out = predict(_cfg(ckpt, video, tmp_path / "out2", "video.max_frames=2", "video.write_video=false"))
    assert out["count"] == 2 and out["video"] is None


def test_bad_inputs_are_readable(ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_input(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        resolve_input(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="neither an image"):
        resolve_input(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="eval.mode=slide needs"):
        Predictor(load_module(ckpt), eval_overrides={"mode": "slide"})
    src_only = _save_ckpt(tmp_path / "src.ckpt", _module_cfg("uda=source_only"))
    with pytest.raises(ValueError, match="no EMA teacher"):
        Predictor(load_module(src_only), network="teacher")


def test_resume_from_a_foreign_checkpoint_is_one_message(tmp_path):
    ours = UDAModule(_module_cfg("uda=dacs"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_resume_checkpoint(tmp_path / "missing.ckpt", ours)
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        check_resume_checkpoint(tmp_path / "junk.ckpt", ours)
    same = _save_ckpt(tmp_path / "same.ckpt", _module_cfg("uda=dacs"))
    with pytest.raises(
        ValueError, match=r"no training state .* model\.init_from=.*same\.ckpt instead of ckpt_path"
    ):
        check_resume_checkpoint(same, ours)  # weights only (e.g. imported): not resumable
    ckpt = torch.load(same, weights_only=True)
    torch.save(dict(ckpt, optimizer_states=[]), same)
    check_resume_checkpoint(same, ours)  # fits: no error
    other = _save_ckpt(tmp_path / "other.ckpt", _module_cfg("uda=source_only", "model.head_channels=32"))
    with pytest.raises(ValueError) as e:
        check_resume_checkpoint(other, ours)
    msg = str(e.value)
    assert "does not fit this run" in msg and "uda=source_only" in msg and "uda=dacs" in msg
    assert "missing" in msg and "another shape" in msg and "\n" not in msg


def test_readable_errors_decorator(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @readable_errors
    def bad(kind):
        if kind == "user":
            raise ValueError("first line\n  second line")
        raise RuntimeError("a bug")

    with pytest.raises(SystemExit) as e:
        bad("user")
    assert e.value.code == 1
    assert capsys.readouterr().err == "error: first line | second line\n"
    with pytest.raises(RuntimeError):  # bugs keep their traceback
        bad("bug")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError):
        bad("user")


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


@pytest.mark.parametrize("module", ["src.predict", "src.eval"])
def test_cli_missing_checkpoint_prints_one_line(module, tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    args = [f"ckpt_path={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={tmp_path / 'run'}"]
    if module == "src.predict":
        args.append(f"input={tmp_path / 'in'}")
    r = _cli(module, *args)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [
        f"error: checkpoint {tmp_path / 'missing.ckpt'} does not exist; pass ckpt_path=<path to a .ckpt file>"
    ]


def test_cli_misspelt_key_is_readable(tmp_path):
    r = _cli("src.predict", "ckpt_pth=x.ckpt", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode != 0 and "ckpt_pth" in r.stderr and "Traceback" not in r.stderr

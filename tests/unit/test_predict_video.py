"""`python -m src.predict` with a two-frame (video) checkpoint: every predicted frame is fused with its frame
t−1 and the DIS flow t→t−1 as at validation (video_uda.md §2.3), for folders of frames (one sequence per
sub-folder, sorted names), videos (the previous *decoded* frame, also with every_n_frames > 1), sliding
windows and the teacher; first frames use themselves with zero flow; bad sequences fail readably.

The checkpoint is written directly from a freshly built TPS module (tiny two-frame MiT-B0) whose fusion layer
is set to use the warped previous frame, so the two-frame path is visible in the labels; with the [I | 0]
initialisation the fused prediction must equal the single-frame one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from src.data.flow import compute_dis_flow
from src.data.transforms import to_tensor
from src.models.inference import slide_inference
from src.models.temporal_aggregation import ClipPredictor, TemporalSegmentor
from src.predict import Predictor, frame_sequences, predict
from src.uda.video.module import VideoUDAModule, load_module
from tests.conftest import compose_cfg

H, W = 48, 64


def _fusion(c: int, current: float, previous: float) -> torch.Tensor:
    w = torch.zeros(c, 2 * c, 1, 1)
    w[torch.arange(c), torch.arange(c)] = current
    w[torch.arange(c), c + torch.arange(c)] = previous
    return w


def _save_ckpt(path: Path, *, fused: bool) -> Path:
    """A TPS checkpoint (two-frame student + EMA teacher); `fused`: both fusion layers lean on frame t−1."""
    cfg = compose_cfg(
        "train",
        [
            "experiment=tps_synthetic_video",
            "paths.output_dir=/tmp/x",
            "model.head_channels=16",
            "model.pretrained=null",
        ],
    )
    cfg = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    module = VideoUDAModule(cfg)
    if fused:
        with torch.no_grad():
            module.student.sf_layer.weight.copy_(_fusion(module.num_classes, 0.3, 1.0))
            module.teacher.model.sf_layer.weight.copy_(_fusion(module.num_classes, 0.5, 0.8))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"cfg": cfg}}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _save_ckpt(tmp_path_factory.mktemp("ckpt") / "tps_fused.ckpt", fused=True)


@pytest.fixture(scope="module")
def module(ckpt) -> VideoUDAModule:
    m = load_module(ckpt)
    assert isinstance(m, VideoUDAModule)
    return m


def _frames(n: int, h: int = H, w: int = W, seed: int = 0) -> list[np.ndarray]:
    """A smooth random texture moving 2 px right and 1 px down a frame (so DIS finds a real flow)."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (h + 40, w + 40, 3), dtype=np.uint8), (5, 5), 1.5)
    return [np.ascontiguousarray(base[20 - i : 20 - i + h, 20 - 2 * i : 20 - 2 * i + w]) for i in range(n)]


def _write(folder: Path, frames: list[np.ndarray], names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f, n in zip(frames, names):
        Image.fromarray(f).save(folder / n)


def _cfg(ckpt_path, input_path, output, *extra: str):
    return compose_cfg("predict", [f"ckpt_path={ckpt_path}", f"input={input_path}", f"output={output}",
                                   "paths.output_dir=/tmp/x", "progress=false", *extra])  # fmt: skip


def _ids(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture
def spy(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Records (x, x_prev, flow) of every TemporalSegmentor.predict_clip call."""
    calls: list = []
    original = TemporalSegmentor.predict_clip

    def recording(self, x, x_prev, flow, **kw):
        calls.append((x.clone(), x_prev.clone(), flow.clone()))
        return original(self, x, x_prev, flow, **kw)

    monkeypatch.setattr(TemporalSegmentor, "predict_clip", recording)
    return calls


def _flow(frame: np.ndarray, prev: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(compute_dis_flow(frame, prev, preset="medium")).permute(2, 0, 1)[None]


@torch.no_grad()
def _expected(model, frame: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    x = to_tensor(frame)[None]
    if prev is None:
        x_prev, flow = x, torch.zeros(1, 2, *x.shape[-2:])
    else:
        x_prev, flow = to_tensor(prev)[None], _flow(frame, prev)
    # the video module predicts with uda.align_corners=true (ADVENT's evaluation, udass.md §2.8)
    return model.predict_clip(x, x_prev, flow, align_corners=True).argmax(1)[0].numpy().astype(np.uint8)


def test_folder_sequences_pair_each_file_with_the_previous_one(ckpt, module, spy, tmp_path):
    a, b = _frames(3), _frames(2, 40, 72, seed=1)
    _write(tmp_path / "in" / "seq_a", a, ["f_000.png", "f_001.png", "f_002.png"])
    _write(tmp_path / "in" / "seq_b", b, ["000010.png", "000011.png"])
    out = predict(_cfg(ckpt, tmp_path / "in", tmp_path / "out", "recursive=true"))
    assert out["two_frame"] and out["count"] == 5 and len(spy) == 5
    expected_pairs = [(a[0], None), (a[1], a[0]), (a[2], a[1]), (b[0], None), (b[1], b[0])]
    for (x, x_prev, flow), (frame, prev) in zip(spy, expected_pairs):
        assert torch.equal(x, to_tensor(frame)[None])
        if prev is None:  # a sequence's first frame: itself as t−1, zero flow
            assert torch.equal(x_prev, x) and not flow.any()
        else:
            assert torch.equal(x_prev, to_tensor(prev)[None])
            assert torch.equal(flow, _flow(frame, prev)) and flow.abs().mean() > 0.5  # DIS sees the motion
    names = ["seq_a/f_000", "seq_a/f_001", "seq_a/f_002", "seq_b/000010", "seq_b/000011"]
    differs = 0
    for name, (frame, prev) in zip(names, expected_pairs):
        ids = _ids(tmp_path / "out" / "train_ids" / f"{name}.png")
        assert np.array_equal(ids, _expected(module.student, frame, prev))
        with torch.no_grad():
            single = module.student.predict(to_tensor(frame)[None]).argmax(1)[0].numpy()
        differs += int(not np.array_equal(ids, single))
    assert differs >= 3  # the fusion layer leans on frame t−1: not the single-frame prediction


def test_identity_fusion_equals_the_single_frame_prediction(tmp_path):
    ckpt = _save_ckpt(tmp_path / "identity.ckpt", fused=False)
    frames = _frames(3)
    _write(tmp_path / "in", frames, ["a.png", "b.png", "c.png"])
    predict(_cfg(ckpt, tmp_path / "in", tmp_path / "out"))
    student = load_module(ckpt).student
    for name, frame in zip("abc", frames):
        with (
            torch.no_grad()
        ):  # the current frame alone, upsampled as the video module predicts (align_corners)
            x = to_tensor(frame)[None]
            low = student.decode(student.extract_feat(x))
            single = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=True)
            single = single.argmax(1)[0].numpy()
        assert np.array_equal(_ids(tmp_path / "out" / "train_ids" / f"{name}.png"), single)


def test_video_pairs_with_the_previous_decoded_frame(ckpt, module, spy, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (W, H))
    assert writer.isOpened()
    for f in _frames(5):
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    cap, decoded = cv2.VideoCapture(str(video)), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(decoded) == 5
    out = predict(_cfg(ckpt, video, tmp_path / "out", "video.every_n_frames=2", "video.write_video=false"))
    assert out["two_frame"] and out["count"] == 3 and len(spy) == 3
    for (x, x_prev, flow), index in zip(spy, (0, 2, 4)):
        assert torch.equal(x, to_tensor(decoded[index])[None])
        if index == 0:
            assert torch.equal(x_prev, x) and not flow.any()
        else:  # frame t−1 is the skipped decoded frame before it, not the previous kept one
            assert torch.equal(x_prev, to_tensor(decoded[index - 1])[None])
            assert torch.equal(flow, _flow(decoded[index], decoded[index - 1]))
        prev = None if index == 0 else decoded[index - 1]
        ids = _ids(tmp_path / "out" / "train_ids" / f"clip_{index:06d}.png")
        assert np.array_equal(ids, _expected(module.student, decoded[index], prev))


def test_single_image_warns_and_sequence_false_uses_no_context(ckpt, module, spy, tmp_path, caplog):
    frames = _frames(2)
    _write(tmp_path / "in", frames, ["a.png", "b.png"])
    with caplog.at_level(logging.WARNING, logger="src.predict"):
        predict(_cfg(ckpt, tmp_path / "in" / "b.png", tmp_path / "one"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no temporal context" in warnings[0].getMessage()
    assert np.array_equal(
        _ids(tmp_path / "one" / "train_ids" / "b.png"), _expected(module.student, frames[1], None)
    )
    spy.clear()
    predict(_cfg(ckpt, tmp_path / "in", tmp_path / "out", "sequence=false"))
    assert len(spy) == 2 and all(torch.equal(x, xp) and not f.any() for x, xp, f in spy)


def test_slide_windows_teacher_and_rescale(ckpt, module, spy, tmp_path):
    frames = _frames(2)
    _write(tmp_path / "in", frames, ["a.png", "b.png"])
    predict(_cfg(ckpt, tmp_path / "in", tmp_path / "out", "network=teacher", "eval.mode=slide",
                 "eval.crop_size=[32,32]", "eval.stride=[16,16]"))  # fmt: skip
    x, x_prev = to_tensor(frames[1])[None], to_tensor(frames[0])[None]
    z = ClipPredictor.stack(x, x_prev, _flow(frames[1], frames[0]))
    with torch.no_grad():
        logits = slide_inference(ClipPredictor(module.teacher.model, align_corners=True), z, num_classes=19,
                                 crop_size=(32, 32), stride=(16, 16), align_corners=True)  # fmt: skip
        whole = module.teacher.model.predict_clip(x, x_prev, _flow(frames[1], frames[0]))
    ids = _ids(tmp_path / "out" / "train_ids" / "b.png")
    assert np.array_equal(ids, logits.argmax(1)[0].numpy())
    assert not torch.equal(logits, whole)  # really windowed
    # the DIS flow is computed on the frames the network sees: scale=[56,42] -> 42x56 frames and flow
    spy.clear()
    p = Predictor(load_module(ckpt), scale=[56, 42])
    small = [cv2.resize(f, (56, 42), interpolation=cv2.INTER_LINEAR) for f in frames]
    assert p(frames[1], frames[0]).shape == (H, W) and len(spy) == 1
    x, x_prev, flow = spy[0]
    assert x.shape[-2:] == x_prev.shape[-2:] == flow.shape[-2:] == (42, 56)
    assert torch.equal(flow, _flow(small[1], small[0]))


def test_bad_sequences_and_flow_options_are_readable(ckpt, module, tmp_path):
    _write(tmp_path / "in", [*_frames(1), *_frames(1, 40, 72)], ["a.png", "b.png"])
    with pytest.raises(ValueError, match=r"b\.png .*follows a\.png.*sequence=false"):
        predict(_cfg(ckpt, tmp_path / "in", tmp_path / "out"))
    assert predict(_cfg(ckpt, tmp_path / "in", tmp_path / "out2", "sequence=false"))["count"] == 2
    with pytest.raises(ValueError, match="flow.preset='slow'"):
        Predictor(module, flow_preset="slow")
    with pytest.raises(ValueError, match="flow.scale=2"):
        Predictor(module, flow_scale=2)
    files = [Path("r/s2/b.png"), Path("r/s1/b.png"), Path("r/s1/a.png"), Path("r/a.png")]
    assert frame_sequences(files) == [[Path("r/a.png")], [Path("r/s1/a.png"), Path("r/s1/b.png")],
                                      [Path("r/s2/b.png")]]  # fmt: skip


def test_frame_sequences_sort_numbers_as_numbers(tmp_path):
    from src.predict import frame_sequences

    names = ["frame_10.png", "frame_9.png", "frame_100.png", "frame_0.png", "b/x_2.png", "b/x_1.png"]
    files = [tmp_path / n for n in names]
    seqs = frame_sequences(files)
    assert [[p.relative_to(tmp_path).as_posix() for p in s] for s in seqs] == [
        ["frame_0.png", "frame_9.png", "frame_10.png", "frame_100.png"],
        ["b/x_1.png", "b/x_2.png"],
    ]

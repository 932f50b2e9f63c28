"""`python -m src.predict ckpt_path=PATH input=DIR|IMAGE|VIDEO output=DIR [eval.mode=slide ...]`

Segments a folder of images, a single image, or a video file with the student (or `network=teacher`) of a
checkpoint and writes, per image or kept video frame `<name>`:

    <output>/color/<name>.png       the prediction in the Cityscapes palette (ignore = black)
    <output>/overlay/<name>.png     the prediction blended into the image (`alpha`)
    <output>/train_ids/<name>.png   the raw train-id map, uint8 (`save_train_ids`)

and for a video also `<output>/<video stem>_overlay.mp4` (`video.write_video`). With ``format=submission`` it
writes the test predictions as a benchmark server takes them instead, one zip (ACDC, Dark Zurich,
Cityscapes; :func:`predict_submission`, src/submission.py). Folder inputs keep their
relative paths (with `recursive=true`, sub-folders too); video frames are named `<stem>_NNNNNN` after the
frame index.

Inference follows validation (`UDAModule.infer`): the image is rescaled like the checkpoint's validation
images (`scale=auto`: `data.val_scale`, keep ratio), run whole or in sliding windows (`eval.mode=slide`
with `eval.crop_size` / `eval.stride`), and the logits are upsampled to the original size before the
argmax. A missing checkpoint or input ends in one line `error: ...` (src/utils/cli.py).

Two-frame (video) checkpoints (a model with ``forward_clip``: ``model=accel_*``, trained by
``src.uda.video.module.VideoUDAModule``) are run as at their validation (video_uda.md §2.3: "val also needs
the t→t−1 flow and frame t−1"; ``VideoUDAModule.validation_step``): the fused prediction of (frame t,
frame t−1, backward flow t→t−1), whole or in sliding windows that crop both frames and the flow together
(``ClipPredictor``). The pairs:

* video: each predicted frame t with the immediately preceding *decoded* frame t−1, also when
  ``video.every_n_frames`` > 1 (the previous decoded frame is kept in memory);
* folder of images (``sequence=true``): every (sub-)folder is one ordered frame sequence, its files sorted
  by name, numbers compared as numbers (``frame_9`` before ``frame_10``); frame t−1 is the previous file of
  the same folder, and frames of a sequence must share one size. ``sequence=false``: every image is a first
  frame;
* the **first frame of a sequence** (frame 0 of a video, the first file of a folder, a single image input)
  uses itself as frame t−1 with a **zero flow**, i.e. the fusion of the current logits with themselves; a
  single image logs one warning that it has no temporal context.

The flow t→t−1 is computed on the fly with OpenCV DIS (:func:`src.data.flow.compute_dis_flow`,
video_uda.md §6; ``flow.preset``, ``flow.scale``) on the two frames as the network sees them, i.e. after the
``scale`` rescale; published flows are not read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import src.utils.config  # noqa: F401
from src.data.classes import palette_for
from src.data.datasets.folder import read_image
from src.data.flow import DIS_PRESETS, compute_dis_flow
from src.data.transforms import EvalTransform, normalize_uint8
from src.models.temporal_aggregation import ClipPredictor
from src.submission import check_submission, find_test_images, write_result, zip_folder
from src.uda.module import UDAModule
from src.uda.video.module import load_module
from src.utils.cli import readable_errors
from src.utils.settings import check_settings
from src.utils.visualize import colorize, overlay, save_png

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def find_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Image files of a folder (sorted; sub-folders too with `recursive`)."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def resolve_input(path: str | Path, *, recursive: bool = False) -> tuple[str, list[Path] | Path]:
    """('images', [files]) for a folder or an image file, ('video', file) for a video; readable errors."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"input {p} does not exist: pass input=<folder of images, image or video file>"
        )
    if p.is_dir():
        files = find_images(p, recursive=recursive)
        if not files:
            hint = "" if recursive else " (add recursive=true to search sub-folders)"
            raise ValueError(f"input folder {p} holds no image ({', '.join(IMAGE_SUFFIXES)}){hint}")
        return "images", files
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "images", [p]
    if suffix in VIDEO_SUFFIXES:
        return "video", p
    images, videos = ", ".join(IMAGE_SUFFIXES), ", ".join(VIDEO_SUFFIXES)
    raise ValueError(f"input {p} is neither an image ({images}) nor a video ({videos})")


def frame_sequences(files: list[Path]) -> list[list[Path]]:
    """The ordered frame sequences of a folder input: one per (sub-)folder, files in natural name order
    (digit runs compared as numbers: ``frame_9`` before ``frame_10``; zero-padded names sort as before)."""
    groups: dict[Path, list[Path]] = {}
    for f in files:
        groups.setdefault(f.parent, []).append(f)
    return [sorted(groups[parent], key=_natural_key) for parent in sorted(groups)]


def _natural_key(path: Path) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


def pick_device(name: str) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return dev


class Predictor:
    """Image (HxWx3 uint8 RGB) -> train-id map (HxW uint8) with a checkpoint's model, as at validation.

    A two-frame model (``two_frame``: it has ``forward_clip``) also takes the previous frame,
    ``predictor(image, prev)``, and fuses both with the DIS flow image→prev (``flow_preset``, ``flow_scale``,
    :func:`src.data.flow.compute_dis_flow`) computed at the network's input size; ``prev=None`` (a first
    frame) uses the image itself with a zero flow. Single-frame models ignore ``prev``.
    """

    def __init__(
        self,
        module: UDAModule,
        *,
        network: str = "student",
        eval_overrides: dict[str, Any] | None = None,
        scale: Any = "auto",
        device: str = "auto",
        flow_preset: str = "medium",
        flow_scale: float = 1.0,
    ) -> None:
        if network not in ("student", "teacher"):
            raise ValueError(f"network must be 'student' or 'teacher', got {network!r}")
        if network == "teacher" and module.teacher is None:
            raise ValueError(
                f"network=teacher but the {module.method} checkpoint has no EMA teacher; use network=student"
            )
        self.module = module
        module.eval_cfg.update({k: v for k, v in (eval_overrides or {}).items() if v is not None})
        e = module.eval_cfg
        if e.get("mode", "whole") not in ("whole", "slide"):
            raise ValueError(f"eval.mode must be 'whole' or 'slide', got {e.get('mode')!r}")
        if e.get("mode") == "slide" and (not e.get("crop_size") or not e.get("stride")):
            raise ValueError(
                "eval.mode=slide needs eval.crop_size=[h,w] and eval.stride=[h,w] (the checkpoint sets none)"
            )
        if scale == "auto":
            scale = (module.cfg.get("data") or {}).get("val_scale")
        # uint8 resize (the frames DIS sees), then the normalisation of `to_tensor` (bit for bit)
        self.transform = EvalTransform(scale=None if scale in (None, "null") else tuple(scale), uint8=True)
        self.device = pick_device(device)
        module.to(self.device).eval()
        self.model = module.student if network == "student" else module.teacher.model
        self.two_frame = hasattr(self.model, "forward_clip")
        if str(flow_preset).lower() not in DIS_PRESETS:
            raise ValueError(
                f"flow.preset={flow_preset!r} is not a DIS preset; choose from {sorted(DIS_PRESETS)}"
            )
        if not 0 < float(flow_scale) <= 1:
            raise ValueError(f"flow.scale={flow_scale} must be in (0, 1] (DIS on frames resized by it)")
        self.flow_preset, self.flow_scale = str(flow_preset).lower(), float(flow_scale)
        self.num_classes = module.num_classes
        self.class_names = list(module.class_names)
        self._cache: tuple[np.ndarray, np.ndarray, torch.Tensor] | None = None  # the last prepared image

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """(the rescaled uint8 HxWx3 frame, its normalised 1x3xhxw tensor on the device). Two-frame models
        cache the last image (by identity), so a frame prepared as frame t is not prepared again as the next
        frame's t−1."""
        if self._cache is not None and self._cache[0] is image:
            return self._cache[1], self._cache[2]
        u8 = self.transform(image, None)["img"]  # 3xhxw uint8 view
        x = normalize_uint8(u8.unsqueeze(0).to(self.device))
        rescaled = u8.permute(1, 2, 0).numpy()
        if self.two_frame:
            self._cache = (image, rescaled, x)
        return rescaled, x

    def flow(self, frame: np.ndarray, prev: np.ndarray) -> torch.Tensor:
        """The backward DIS flow frame→prev, (1,2,h,w) pixels of the (DIS-scaled) frames."""
        f = compute_dis_flow(frame, prev, preset=self.flow_preset, scale=self.flow_scale)
        return torch.from_numpy(f).permute(2, 0, 1).unsqueeze(0).to(self.device)

    @torch.inference_mode()
    def logits(self, image: np.ndarray, prev: np.ndarray | None = None) -> torch.Tensor:
        """(1, C, H, W) logits at the image's original size."""
        size = tuple(image.shape[:2])
        if not self.two_frame:
            return self.module.infer(self.model, self.prepare(image)[1], size)
        if prev is not None and prev.shape != image.shape:
            raise ValueError(
                f"the previous frame is {prev.shape[1]}x{prev.shape[0]}, the frame {image.shape[1]}x"
                f"{image.shape[0]}: the frames of a sequence must share one size"
            )
        if prev is None:  # a first frame: itself as t−1, zero flow
            u8, x = self.prepare(image)
            x_prev, flow = x, torch.zeros(1, 2, *x.shape[-2:], device=self.device)
        else:
            u8_prev, x_prev = self.prepare(prev)
            u8, x = self.prepare(image)
            flow = self.flow(u8, u8_prev)
        m = self.module
        z = ClipPredictor.stack(m._prep(x), m._prep(x_prev), flow.float())
        return m.infer(ClipPredictor(self.model), z, size)

    def __call__(self, image: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
        return self.logits(image, prev).argmax(1)[0].to(torch.uint8).cpu().numpy()


def iter_video(
    path: Path, *, every_n_frames: int = 1, max_frames: int | None = None, with_previous: bool = False
) -> Iterator[tuple]:
    """(frame index, RGB frame) of the kept frames of a video; `with_previous`: (index, frame, the
    immediately preceding decoded RGB frame, None for frame 0), whatever `every_n_frames`."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}: unknown format or codec (OpenCV could not read it)")
    every = max(1, int(every_n_frames))
    kept, index = 0, 0
    prev_bgr, prev_rgb = None, None  # the last decoded frame (its RGB when it was kept)
    try:
        while max_frames is None or kept < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = None
            if index % every == 0:
                kept += 1
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                if not with_previous:
                    yield index, rgb
                else:
                    if prev_rgb is None and prev_bgr is not None:
                        prev_rgb = cv2.cvtColor(prev_bgr, cv2.COLOR_BGR2RGB)
                    yield index, rgb, prev_rgb
            if with_previous:
                prev_bgr, prev_rgb = frame, rgb
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise ValueError(f"video {path} holds no readable frame")


def video_info(path: Path) -> tuple[int, float]:
    """(frame count as reported by the container, 0 when unknown; frames per second, 25 when unknown)."""
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    return max(n, 0), (fps if fps > 0 else 25.0)


class _VideoSink:
    """Overlay frames -> an .mp4 (mp4v), falling back to .avi (MJPG) where the mp4 writer is unavailable."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.writer: cv2.VideoWriter | None = None

    def write(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            h, w = rgb.shape[:2]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                self.path = self.path.with_suffix(".avi")
                self.writer = cv2.VideoWriter(
                    str(self.path), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h)
                )
            if not self.writer.isOpened():
                raise ValueError(f"cannot write video {self.path}: no working OpenCV video writer")
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> Path | None:
        if self.writer is None:
            return None
        self.writer.release()
        return self.path


def write_prediction(
    out_dir: Path, name: str, image: np.ndarray, label: np.ndarray, *, num_classes: int, alpha: float,
    save_train_ids: bool, class_names: list[str] | None = None,
) -> np.ndarray:  # fmt: skip
    """Write color/<name>.png, overlay/<name>.png [, train_ids/<name>.png]; returns the overlay."""
    pal = palette_for(num_classes, class_names)
    ov = overlay(image, label, alpha=alpha, palette=pal)
    save_png(colorize(label, palette=pal), out_dir / "color" / f"{name}.png")
    save_png(ov, out_dir / "overlay" / f"{name}.png")
    if save_train_ids:
        save_png(label.astype(np.uint8), out_dir / "train_ids" / f"{name}.png")
    return ov


def _image_pairs(
    files: list[Path], *, two_frame: bool, sequence: bool
) -> Iterator[tuple[Path, np.ndarray, np.ndarray | None]]:
    """(file, image, previous frame or None) of a folder input; previous frames only for two-frame models."""
    if not (two_frame and sequence):
        for f in files:
            yield f, read_image(f), None
        return
    for seq in frame_sequences(files):
        prev: tuple[Path, np.ndarray] | None = None
        for f in seq:
            image = read_image(f)
            if prev is not None and prev[1].shape != image.shape:
                raise ValueError(
                    f"{f} ({image.shape[1]}x{image.shape[0]}) follows {prev[0].name} ({prev[1].shape[1]}x"
                    f"{prev[1].shape[0]}) in the frame sequence {f.parent}: the frames of a two-frame "
                    "model's sequence must share one size; put each sequence in its own sub-folder "
                    "(recursive=true) or set sequence=false for unrelated images"
                )
            yield f, image, None if prev is None else prev[1]
            prev = (f, image)


def predict_submission(cfg: DictConfig, predictor: Predictor) -> dict[str, Any]:
    """``format=submission``: every test image under ``cfg.input`` through the model, written as the benchmark
    server takes them (src/submission.py) under ``<output>/<benchmark>_submission/`` and zipped to
    ``<output>/<benchmark>_submission.zip``, which is read back and checked against the server's rules."""
    sub = cfg.get("submission") or {}
    invalid_below = sub.get("invalid_below")
    if invalid_below is not None and not (
        isinstance(invalid_below, (int, float)) and 0 <= invalid_below <= 1
    ):
        raise ValueError(
            f"submission.invalid_below={invalid_below!r}: a confidence in [0, 1], or null (none)"
        )
    b, images = find_test_images(cfg.input, str(sub.get("benchmark", "auto")))
    out = Path(cfg.output)
    folder = out / f"{b.name}_submission"
    for f in b.folders:  # a previous export's files must not end up in this zip
        for p in (folder / f).glob("*.png"):
            p.unlink()
    names: dict[str, Path] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for f in tqdm(
        images, desc=f"{b.name} submission", unit="img", disable=not bool(cfg.get("progress", True))
    ):
        image = read_image(f)
        probs = predictor.logits(image).float().softmax(1)[0]
        p_max, ids = probs.max(0)
        name = write_result(b, folder, f, p_max.cpu().numpy(), ids.to(torch.uint8).cpu().numpy(),
                            invalid_below=invalid_below)  # fmt: skip
        if name in names:
            raise ValueError(f"{f} and {names[name]} give the same result name {name}: pass one test set")
        names[name], sizes[name] = f, (image.shape[1], image.shape[0])
    zip_path = zip_folder(b, folder, out / f"{b.name}_submission.zip")
    problems = check_submission(b, zip_path, images, sizes)
    if problems:
        raise RuntimeError(f"{zip_path} breaks the {b.title} server's rules: " + "; ".join(problems[:5]))
    note = "" if len(images) == b.test_images else (
        f" NOTE: {len(images)} test image(s), the full {b.title} test set has {b.test_images}: the server "
        f"scores a complete set only"
    )  # fmt: skip
    print(f"wrote {len(images)} {b.title} test prediction(s) ({b.ids} ids) to {zip_path}; upload it at "
          f"{b.server}.{note}")  # fmt: skip
    return {"kind": "submission", "benchmark": b.name, "count": len(images), "output": str(folder),
            "zip": str(zip_path), "two_frame": predictor.two_frame}  # fmt: skip


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run the prediction of `cfg` (conf/predict.yaml); returns {'kind', 'count', 'output', 'video',
    'two_frame'} (``format=submission``: see :func:`predict_submission`)."""
    check_settings(cfg)  # eval.crop_size / eval.stride
    fmt = str(cfg.get("format", "images"))
    if fmt not in ("images", "submission"):
        raise ValueError(f"format={fmt!r}: choose images (colour / overlay / train-id PNGs) or submission")
    if fmt == "images":
        kind, source = resolve_input(cfg.input, recursive=bool(cfg.get("recursive", False)))
    else:
        find_test_images(cfg.input, str((cfg.get("submission") or {}).get("benchmark", "auto")))  # fail early
    module = load_module(cfg.ckpt_path)
    overrides = OmegaConf.to_container(cfg.eval, resolve=True) if cfg.get("eval") else {}
    scale = cfg.get("scale", "auto")
    scale = OmegaConf.to_container(scale) if OmegaConf.is_config(scale) else scale
    network, device = cfg.get("network", "student"), cfg.get("device", "auto")
    flow_cfg = cfg.get("flow") or {}
    predictor = Predictor(module, network=network, eval_overrides=overrides, scale=scale, device=device,
                          flow_preset=flow_cfg.get("preset", "medium"),
                          flow_scale=flow_cfg.get("scale", 1.0))  # fmt: skip
    if fmt == "submission":
        return predict_submission(cfg, predictor)
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    alpha, save_ids = float(cfg.get("alpha", 0.5)), bool(cfg.get("save_train_ids", True))
    progress = bool(cfg.get("progress", True))
    count, video_path = 0, None
    two_frame = predictor.two_frame
    if kind == "images":
        root = Path(str(cfg.input)).expanduser()
        sequence = bool(cfg.get("sequence", True))
        if two_frame and not root.is_dir():
            log.warning(
                "%s is a single image for a two-frame (video) model: no temporal context, it is fused with "
                "itself (zero flow); predict a folder of frames or a video for the temporal aggregation",
                root,
            )
        elif two_frame:
            n_seq = len(frame_sequences(source)) if sequence else len(source)
            log.info(
                "two-frame model: %d frame sequence(s) (%s); a first frame uses itself as t-1 with zero flow",
                n_seq, "one per folder, files sorted by name" if sequence else "sequence=false: every image",
            )  # fmt: skip
        pairs = _image_pairs(source, two_frame=two_frame, sequence=sequence)
        for f, image, prev in tqdm(
            pairs, desc="predict", unit="img", total=len(source), disable=not progress
        ):
            name = f.relative_to(root).with_suffix("").as_posix() if root.is_dir() else f.stem
            write_prediction(out_dir, name, image, predictor(image, prev), num_classes=predictor.num_classes,
                             class_names=predictor.class_names, alpha=alpha,
                             save_train_ids=save_ids)  # fmt: skip
            count += 1
    else:
        v = cfg.get("video") or {}
        every = max(1, int(v.get("every_n_frames", 1) or 1))
        max_frames = v.get("max_frames")
        n_frames, fps = video_info(source)
        total = (n_frames + every - 1) // every if n_frames else None
        if max_frames is not None and total is not None:
            total = min(total, int(max_frames))
        if two_frame:
            log.info(
                "two-frame model: each frame t is fused with decoded frame t-1 (frame 0: itself, zero flow)"
            )
        sink = (
            _VideoSink(out_dir / f"{source.stem}_overlay.mp4", fps / every)
            if v.get("write_video", True)
            else None
        )
        try:
            frames = iter_video(source, every_n_frames=every, max_frames=max_frames, with_previous=True)
            for index, frame, prev in tqdm(frames, desc="predict", unit="frame", total=total,
                                           disable=not progress):  # fmt: skip
                name = f"{source.stem}_{index:06d}"
                label = predictor(frame, prev)
                ov = write_prediction(
                    out_dir,
                    name,
                    frame,
                    label,
                    num_classes=predictor.num_classes,
                    class_names=predictor.class_names,
                    alpha=alpha,
                    save_train_ids=save_ids,
                )
                if sink is not None:
                    sink.write(ov)
                count += 1
        finally:
            video_path = sink.close() if sink is not None else None
    log.info("wrote %d predictions to %s", count, out_dir)
    print(
        f"wrote {count} prediction(s) to {out_dir}" + (f"; overlay video {video_path}" if video_path else "")
    )
    return {
        "kind": kind,
        "count": count,
        "output": str(out_dir),
        "video": str(video_path) if video_path else None,
        "two_frame": two_frame,
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@readable_errors  # missing checkpoint / input -> one line on stderr (src/utils/cli.py)
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()

"""`python -m src.predict ckpt_path=PATH input=DIR|IMAGE|VIDEO output=DIR [eval.mode=slide ...]`

Segments a folder of images, a single image, or a video file with the student (or `network=teacher`) of a
checkpoint and writes, per image or kept video frame `<name>`:

    <output>/color/<name>.png       the prediction in the Cityscapes palette (ignore = black)
    <output>/overlay/<name>.png     the prediction blended into the image (`alpha`)
    <output>/train_ids/<name>.png   the raw train-id map, uint8 (`save_train_ids`)

and for a video also `<output>/<video stem>_overlay.mp4` (`video.write_video`). Folder inputs keep their
relative paths (with `recursive=true`, sub-folders too); video frames are named `<stem>_NNNNNN` after the
frame index.

Inference follows validation (`UDAModule.infer`): the image is rescaled like the checkpoint's validation
images (`scale=auto`: `data.val_scale`, keep ratio), run whole or in sliding windows (`eval.mode=slide`
with `eval.crop_size` / `eval.stride`), and the logits are upsampled to the original size before the
argmax. A missing checkpoint or input ends in one line `error: ...` (src/utils/cli.py).
"""

from __future__ import annotations

import logging
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
from src.data.transforms import EvalTransform
from src.uda.module import UDAModule, load_module
from src.utils.cli import readable_errors
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


def pick_device(name: str) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return dev


class Predictor:
    """Image (HxWx3 uint8 RGB) -> train-id map (HxW uint8) with a checkpoint's model, as at validation."""

    def __init__(
        self,
        module: UDAModule,
        *,
        network: str = "student",
        eval_overrides: dict[str, Any] | None = None,
        scale: Any = "auto",
        device: str = "auto",
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
        self.transform = EvalTransform(scale=None if scale in (None, "null") else tuple(scale))
        self.device = pick_device(device)
        module.to(self.device).eval()
        self.model = module.student if network == "student" else module.teacher.model
        self.num_classes = module.num_classes
        self.class_names = list(module.class_names)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = self.transform(image, None)["img"].unsqueeze(0).to(self.device)
        logits = self.module.infer(self.model, x, tuple(image.shape[:2]))
        return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def iter_video(
    path: Path, *, every_n_frames: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB frame) of the kept frames of a video."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}: unknown format or codec (OpenCV could not read it)")
    every = max(1, int(every_n_frames))
    kept, index = 0, 0
    try:
        while max_frames is None or kept < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index % every == 0:
                kept += 1
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
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


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run the prediction of `cfg` (conf/predict.yaml); returns {'kind', 'count', 'output', 'video'}."""
    kind, source = resolve_input(cfg.input, recursive=bool(cfg.get("recursive", False)))
    module = load_module(cfg.ckpt_path)
    overrides = OmegaConf.to_container(cfg.eval, resolve=True) if cfg.get("eval") else {}
    scale = cfg.get("scale", "auto")
    scale = OmegaConf.to_container(scale) if OmegaConf.is_config(scale) else scale
    network, device = cfg.get("network", "student"), cfg.get("device", "auto")
    predictor = Predictor(module, network=network, eval_overrides=overrides, scale=scale, device=device)
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    alpha, save_ids = float(cfg.get("alpha", 0.5)), bool(cfg.get("save_train_ids", True))
    progress = bool(cfg.get("progress", True))
    count, video_path = 0, None
    if kind == "images":
        root = Path(str(cfg.input)).expanduser()
        for f in tqdm(source, desc="predict", unit="img", disable=not progress):
            name = f.relative_to(root).with_suffix("").as_posix() if root.is_dir() else f.stem
            image = read_image(f)
            write_prediction(out_dir, name, image, predictor(image), num_classes=predictor.num_classes,
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
        sink = (
            _VideoSink(out_dir / f"{source.stem}_overlay.mp4", fps / every)
            if v.get("write_video", True)
            else None
        )
        try:
            frames = iter_video(source, every_n_frames=every, max_frames=max_frames)
            for index, frame in tqdm(frames, desc="predict", unit="frame", total=total, disable=not progress):
                name = f"{source.stem}_{index:06d}"
                label = predictor(frame)
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
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@readable_errors  # missing checkpoint / input -> one line on stderr (src/utils/cli.py)
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()

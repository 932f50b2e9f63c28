"""Synthetic two-domain street *clips* with exact ground-truth backward flows: the embedded video data.

Our design (no counterpart in the reference notes), the video extension of ``src/data/datasets/synthetic.py``:
the same scene model, materials and domain styles (source GTA-like, target Cityscapes-like, ``gap``), rendered
as short clips so that every video method, test and notebook runs without a download or a flow estimator.

Motion (per clip, drawn from the clip's generator):

- **ego-motion**: the camera drives forward, rendered as a zoom by 1 + g per frame (g ~ U(0.005, 0.04)) about
  the vanishing point, plus a lateral / vertical drift of up to 2 / 0.5 px per frame;
- **independently moving objects**: up to ``max_movers`` of the scene's things (vehicles, pedestrians,
  two-wheelers) each translate by their own velocity (0.5–2.5 px per frame sideways, ±0.3 px vertically),
  occluding and being occluded in depth order (a person behind a pole stays behind it);
- the target camera's ego-vehicle hood is fixed to the camera (flow 0, label ignore, like Cityscapes').

Rendering: the scene is painted once at ``supersample`` × the frame resolution with a margin, split into depth
layers (the background with every static object behind the first mover, each mover, the static objects
between movers), each layer with its colour, coverage (alpha), labels and, in the target domain, its noise
textures attached to the layer. Frame j samples every layer through its known affine map (camera) and
translation (object), composites them far to near and area-averages down to the frame size; the target's
camera effects (exposure, vignetting and sun gradient, blur, sensor noise) are then applied per frame.

Ground-truth flow: because every pixel's motion is a known affine map of its layer, the backward flow t−a ->
t−b is computed *analytically* (:meth:`SyntheticClip.flow`), in pixels on frame t−a's grid, with a mask of the
pixels whose point is visible in frame t−b (not occluded by another layer, not out of frame). Warping frame
t−b with it reproduces frame t−a up to resampling and (target) sensor noise (tests/unit/test_video_data.py
measures it).

On disk, the generic clip folder layout of ``src/data/datasets/clip_folder.py`` (Cityscapes-like names: the
split is the "city", the clip index the "sequence", the current frame is frame 19 as in Cityscapes' snippets,
video_uda.md §1.2)::

    ROOT/{source,target,val}/frames/<split>_<clip:06d>_<frame:06d>.png           RGB
    ROOT/source/labels/...png (every frame), ROOT/val/labels/...png (frame 19)   train ids, 255 = ignore
    ROOT/{split}/flows/<split>_<clip:06d>_<t:06d>_<s:06d>_int16_x10.npy          exact backward flows
    ROOT/classes.txt, ROOT/manifest.json, ROOT/source/sample_class_stats.json (data prepare step)

Source and validation clips hold frames 18, 19 and the flow 19 -> 18; target clips hold 19−max_interval−1 ..
19 and every flow the target needs for data.interval Δ ≤ max_interval (19 -> 18, 19 -> 19−Δ,
(19−Δ) -> (19−Δ−1), 19 -> 19−Δ−1). Clip i of split s is rendered from ``default_rng([seed, code(s), i])``
alone, so the files do not depend on ``num_workers``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from src.data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX
from src.data.datasets import synthetic as syn
from src.data.datasets.clip_folder import cityscapes_flow_name
from src.data.datasets.generated import check_generated, split_counts, write_generated
from src.data.flow import write_flow

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: the scenes of synthetic.py version 3
_GENERATOR_NAME = "src.data.datasets.synthetic_video"
SPLITS: tuple[str, ...] = ("source", "target", "val")
SPLIT_DOMAIN: dict[str, str] = {"source": "source", "target": "target", "val": "target"}
_SPLIT_CODE = {"source": 100, "target": 101, "val": 102}  # distinct from the image generator's streams
CURRENT_FRAME = 19  # the current (annotated) frame number, as in Cityscapes' 30-frame snippets (§1.2)
_SENTINEL = 254  # "not painted" in a layer's label canvas (no class uses it)


# ----------------------------------------------------------------------------------------------------------
# Motion model
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Motion:
    """Frame j (0 = oldest) sees base-canvas point ``to_base(j, x)`` at its pixel x (frame pixel centres are
    integers; the base canvas is ``ss`` × finer with a ``margin``). Frame 0 is the unzoomed reference."""

    ss: int
    margin: int
    cx: float  # zoom centre (the vanishing point) in base pixels
    cy: float
    zoom: float  # per-frame zoom g: scale (1 + g)^j
    ex: float  # drift per frame, frame pixels
    ey: float

    def scale(self, j: int) -> float:
        return (1.0 + self.zoom) ** j

    def to_base(self, j: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, ss, m = self.scale(j), self.ss, self.margin
        bx0, by0 = ss * (x + m + 0.5) - 0.5, ss * (y + m + 0.5) - 0.5
        return self.cx + j * self.ex * ss + (bx0 - self.cx) / s, self.cy + j * self.ey * ss + (
            by0 - self.cy
        ) / s

    def from_base(self, j: int, bx: np.ndarray, by: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, ss, m = self.scale(j), self.ss, self.margin
        bx0 = self.cx + (bx - self.cx - j * self.ex * ss) * s
        by0 = self.cy + (by - self.cy - j * self.ey * ss) * s
        return (bx0 + 0.5) / ss - m - 0.5, (by0 + 0.5) / ss - m - 0.5


@dataclass
class _Layer:
    colour: np.ndarray  # Hb x Wb x 3 (opaque background) or x 4 (premultiplied colour + alpha) float32
    label: np.ndarray  # Hb x Wb uint8 train ids; _SENTINEL where a transparent layer is empty
    velocity: tuple[float, float]  # base pixels per frame; (0, 0) for static layers

    @property
    def opaque(self) -> bool:
        return self.colour.shape[-1] == 3


@dataclass
class SyntheticClip:
    """One rendered clip. ``frames[j]`` / ``labels[j]`` / ``owners[j]`` for j = 0 (oldest) .. F−1 (current
    frame t); ``owners`` holds the layer index of each pixel (−1 = the camera-fixed hood)."""

    frames: list[np.ndarray]
    labels: list[np.ndarray]
    owners: list[np.ndarray]
    motion: _Motion
    velocities: np.ndarray  # (n_layers, 2) base pixels per frame

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def frame(self, k: int) -> np.ndarray:
        """Frame t−k."""
        return self.frames[self.num_frames - 1 - k]

    def label(self, k: int) -> np.ndarray:
        return self.labels[self.num_frames - 1 - k]

    def flow(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact backward flow t−a -> t−b (H×W×2 float32 pixels on frame t−a's grid) and the mask of pixels
        whose point is visible in frame t−b (in frame, same layer there)."""
        ja, jb = self.num_frames - 1 - a, self.num_frames - 1 - b
        owner = self.owners[ja]
        h, w = owner.shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        vel = np.concatenate([np.zeros((1, 2)), self.velocities])[owner + 1]  # row 0: the hood
        bx, by = self.motion.to_base(ja, xs, ys)
        bx = bx + (jb - ja) * vel[..., 0]
        by = by + (jb - ja) * vel[..., 1]
        px, py = self.motion.from_base(jb, bx, by)
        hood = owner < 0
        px[hood], py[hood] = xs[hood], ys[hood]
        flow = np.stack([px - xs, py - ys], -1).astype(np.float32)
        inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
        rx = np.clip(np.rint(px), 0, w - 1).astype(np.int64)
        ry = np.clip(np.rint(py), 0, h - 1).astype(np.int64)
        visible = inside & (self.owners[jb][ry, rx] == owner)
        return flow, visible


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------
def _render_layer(s: syn._Scene, draws: list, hb: int, wb: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint `draws` on empty canvases: (premultiplied colour + alpha Hb x Wb x 4 float32, labels with
    _SENTINEL where nothing was painted). The anti-aliased target uses the black/white trick: a layer painted
    over black is alpha * colour, over white alpha * colour + (1 - alpha) * 255."""
    aa = s.style.antialias
    black = syn._Canvas(hb, wb, aa)
    black.lbl[:] = _SENTINEL
    s.cv = black
    for d in draws:
        d()
    out = np.empty((hb, wb, 4), np.float32)
    out[..., :3] = black.img
    if aa:
        white = syn._Canvas(hb, wb, aa)
        white.img[:] = 255
        s.cv = white
        for d in draws:
            d()
        # every channel carries the same (1 - alpha) * 255 up to rounding: the first one is enough
        diff = cv2.subtract(white.img[..., 0], black.img[..., 0])
        out[..., 3] = 1.0 - diff.astype(np.float32) / 255.0
    else:
        out[..., 3] = black.lbl != _SENTINEL
    return out, black.lbl


def render_clip(
    rng: np.random.Generator,
    *,
    domain: str,
    height: int,
    width: int,
    num_frames: int,
    gap: float = 1.0,
    thing_gap: float | None = None,
    palette_gap: float | None = None,
    camera_gap: float | None = None,
    supersample: int = 2,
    margin: int = 8,
    max_movers: int = 3,
) -> SyntheticClip:
    """Render one clip of ``num_frames`` frames (oldest first). Depends only on the state of ``rng`` and the
    arguments. See the module docstring for the motion and the layers; ``thing_gap``, ``palette_gap`` and
    ``camera_gap`` scale parts of the gap apart, as in the image generator (``syn.domain_style``)."""
    if height < 8 or width < 8:
        raise ValueError(f"frame size must be at least 8x8, got {height}x{width}")
    if num_frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {num_frames}")
    ss, m = int(supersample), int(margin)
    style = syn.domain_style(domain, float(gap), thing_gap, palette_gap, camera_gap)
    target_look = domain == "target" and gap > 0
    s = syn._Scene(rng, style, height * ss, width * ss)  # camera of the frame, at ss x resolution
    hb, wb = (height + 2 * m) * ss, (width + 2 * m) * ss
    s.cam.cx += m * ss
    s.cam.hy += m * ss
    s.h, s.w = hb, wb
    s.cv = syn._Canvas(hb, wb, style.antialias)
    L = syn._sample_layout(rng)
    syn._paint_sky(s)
    syn._paint_skyline(s)
    syn._paint_ground(s, L)
    syn._paint_buildings(s, L)
    syn._paint_walls_fences(s, L)
    syn._place_furniture(s, L)
    n_static = len(s.objects)
    syn._place_things(s, L)
    # motion of the clip and of its moving things
    drift = min(2.0, m / max(num_frames - 1, 1))
    motion = _Motion(
        ss=ss,
        margin=m,
        cx=float(s.cam.cx),
        cy=float(s.cam.hy),
        zoom=float(rng.uniform(0.005, 0.04)),
        ex=float(rng.uniform(-drift, drift)),
        ey=float(rng.uniform(-0.5, 0.5)),
    )
    movers: dict[int, tuple[float, float]] = {}
    for idx in range(n_static, len(s.objects)):
        if len(movers) < max_movers and rng.random() < 0.5:
            vx = float(rng.uniform(0.5, 2.5) * (1 if rng.random() < 0.5 else -1))
            movers[idx] = (vx * ss, float(rng.uniform(-0.3, 0.3)) * ss)
    syn._paint_shadows(s)
    order = sorted(range(len(s.objects)), key=lambda i: -s.objects[i][0])  # far to near, as render_scene
    # layers: background (+ static objects behind the first mover), then movers and static groups
    background = s.cv
    groups: list[tuple[list, tuple[float, float]]] = []
    current: list = []
    for i in order:
        draw = s.objects[i][1]
        if i in movers:
            if groups or current:
                groups.append((current, (0.0, 0.0)))
            groups.append(([draw], movers[i]))
            current = []
        elif not groups:
            s.cv = background
            draw()
        else:
            current.append(draw)
    if groups and current:
        groups.append((current, (0.0, 0.0)))
    layers = [_Layer(background.img.astype(np.float32), background.lbl.copy(), (0.0, 0.0))]
    for draws, vel in groups:
        if draws:
            colour, lbl = _render_layer(s, draws, hb, wb)
            layers.append(_Layer(colour, lbl, vel))
    if target_look and style.texture > 0:  # noise textures attached to the layers (synthetic._postprocess)
        low = syn._value_noise(rng, hb, wb, max(height * ss / 8, 2))
        mid = syn._value_noise(rng, hb, wb, 1.6 * ss)
        fine = rng.standard_normal((hb // ss, wb // ss)).astype(np.float32)
        fine = cv2.resize(fine, (wb, hb), interpolation=cv2.INTER_NEAREST)
        tex = (syn._TEXTURE * style.texture).astype(np.float32)  # per-label amplitudes (256, 3)
        for layer in layers:
            ys, xs = (
                np.nonzero((layer.label != _SENTINEL).any(1))[0],
                np.nonzero((layer.label != _SENTINEL).any(0))[0],
            )
            if not len(ys):
                continue
            box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))  # the layer's painted part
            lab = layer.label[box]
            mod = 1.0 + np.take(tex[:, 0], lab) * low[box]
            mod += np.take(tex[:, 1], lab) * mid[box]
            mod += np.take(tex[:, 2], lab) * fine[box]
            layer.colour[box][..., :3] *= np.clip(mod, 0.3, 2.0)[..., None]
    # camera-fixed ego-vehicle hood (target), per-clip camera effects
    hood = None
    if rng.random() < style.hood:
        s.h, s.w = height, width  # the hood is painted in frame coordinates
        state = rng.bit_generator.state

        def paint_hood() -> None:  # the same hood on the black and the white canvas
            rng.bit_generator.state = state
            syn._paint_hood(s)

        colour, lbl = _render_layer(s, [paint_hood], height, width)
        hood = (colour[..., :3], colour[..., 3:], lbl != _SENTINEL)
    gain = None
    if target_look:
        gain = np.ones((height, width, 3), np.float32)
        if style.exposure > 0:
            gain *= np.exp(rng.normal(0, style.exposure) + rng.normal(0, style.exposure / 2, 3)).astype(
                np.float32
            )
        if style.vignette > 0 or style.sun > 0:
            yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
            xn, yn = (xx - width / 2) / (width / 2), (yy - height / 2) / (height / 2)
            sun_dir = rng.uniform(-1, 1)
            g = (1 - style.vignette * 0.5 * (xn**2 + yn**2)) * (1 + style.sun * sun_dir * xn)
            gain *= g[..., None]
    # frames: every layer sampled through the camera map and its own translation, composited far to near on
    # the fine (ss x) grid, then area-averaged to the frame size; labels / owners at the pixel centres
    fy, fx = np.mgrid[0 : height * ss, 0 : width * ss].astype(np.float32)
    fx, fy = (fx + 0.5) / ss - 0.5, (fy + 0.5) / ss - 0.5
    cy_, cx_ = np.mgrid[0:height, 0:width].astype(np.float32)
    frames, labels, owners = [], [], []
    for j in range(num_frames):
        bx, by = motion.to_base(j, fx, fy)
        cbx, cby = motion.to_base(j, cx_, cy_)
        img = lbl = owner = None
        for li, layer in enumerate(layers):
            dx, dy = np.float32(j * layer.velocity[0]), np.float32(j * layer.velocity[1])
            mx, my, nx, ny = (bx, by, cbx, cby) if not (dx or dy) else (bx - dx, by - dy, cbx - dx, cby - dy)
            if layer.opaque:
                img = cv2.remap(layer.colour, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                lbl = cv2.remap(layer.label, nx, ny, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
                owner = np.zeros((height, width), np.int64)
                continue
            ka = cv2.remap(
                layer.colour, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
            img *= 1.0 - ka[..., 3:]
            img += ka[..., :3]
            lab = cv2.remap(
                layer.label, nx, ny, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=_SENTINEL
            )
            own = lab != _SENTINEL
            lbl[own] = lab[own]
            owner[own] = li
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        if hood is not None:
            hk, ha, hm = hood
            img = hk + (1.0 - ha) * img
            lbl[hm] = IGNORE_INDEX
            owner[hm] = -1
        if target_look:
            img *= gain
            if style.blur > 0:
                img = cv2.GaussianBlur(img, (0, 0), style.blur)
            if style.noise > 0:
                img += rng.normal(0, style.noise, img.shape).astype(np.float32)
        frames.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
        labels.append(lbl)
        owners.append(owner)
    velocities = np.array([layer.velocity for layer in layers], np.float64)
    return SyntheticClip(frames=frames, labels=labels, owners=owners, motion=motion, velocities=velocities)


# ----------------------------------------------------------------------------------------------------------
# Dataset on disk (the clip folder layout)
# ----------------------------------------------------------------------------------------------------------
def split_layout(split: str, max_interval: int) -> tuple[int, tuple[int, ...], tuple[tuple[int, int], ...]]:
    """(frames per clip, offsets with a label file, flow offset pairs) written for ``split``: what the video
    data module reads (source: t, t−1, both labelled; val: t, t−1, t labelled; target: t .. t−Δ−1 for every
    Δ ≤ max_interval, unlabelled, with the flows t->t−1, t->t−Δ, t−Δ->t−Δ−1, t->t−Δ−1)."""
    if split == "source":
        return 2, (0, 1), ((0, 1),)
    if split == "val":
        return 2, (0,), ((0, 1),)
    if split != "target":
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pairs = {(0, 1)}
    for d in range(1, int(max_interval) + 1):
        pairs |= {(0, d), (d, d + 1), (0, d + 1)}
    return int(max_interval) + 2, (), tuple(sorted(pairs))


def _clip_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])


def clip_files(root: Path, split: str, index: int, max_interval: int) -> list[Path]:
    """Every file clip ``index`` of ``split`` has on disk (frames, labels, flows)."""
    n, label_offsets, pairs = split_layout(split, max_interval)
    clip, t = _clip_name(split, index), CURRENT_FRAME
    base = Path(root) / split
    out = [base / "frames" / f"{clip}_{t - k:06d}.png" for k in range(n)]
    out += [base / "labels" / f"{clip}_{t - k:06d}.png" for k in label_offsets]
    out += [base / "flows" / cityscapes_flow_name(clip, t - a, t - b) for a, b in pairs]
    return out


def _render_and_write(job: tuple) -> None:
    root, split, index, seed, height, width, gap, max_interval, gaps = job
    n, label_offsets, pairs = split_layout(split, max_interval)
    clip = render_clip(
        _clip_rng(seed, split, index), domain=SPLIT_DOMAIN[split], height=height, width=width, num_frames=n,
        gap=gap, **gaps,
    )  # fmt: skip
    name, t, base = _clip_name(split, index), CURRENT_FRAME, Path(root) / split
    writes = [(base / "frames" / f"{name}_{t - k:06d}.png", cv2.cvtColor(clip.frame(k), cv2.COLOR_RGB2BGR))
              for k in range(n)]  # fmt: skip
    writes += [(base / "labels" / f"{name}_{t - k:06d}.png", clip.label(k)) for k in label_offsets]
    for path, arr in writes:
        if not cv2.imwrite(str(path), arr):
            raise OSError(f"cannot write {path}")
    for a, b in pairs:
        write_flow(base / "flows" / cityscapes_flow_name(name, t - a, t - b), clip.flow(a, b)[0])


def _params(num_source, num_target, num_val, height, width, seed, gap, max_interval, **gaps) -> dict:
    """The image generator's parameters (``gaps``: its optional ``syn.GAP_KEYS``, recorded only when set) plus
    ``max_interval`` (the manifest records them all)."""
    return {**syn._params(num_source, num_target, num_val, height, width, seed, gap, **gaps),
            "max_interval": int(max_interval)}  # fmt: skip


def generate_synthetic_video_dataset(
    root: str | Path,
    *,
    num_source: int = 200,
    num_target: int = 200,
    num_val: int = 60,
    height: int = 128,
    width: int = 256,
    seed: int = 0,
    gap: float = 1.0,
    max_interval: int = 2,
    num_workers: int = 1,
    thing_gap: float | None = None,
    palette_gap: float | None = None,
    camera_gap: float | None = None,
) -> Path:
    """Render the clips into ROOT (replacing what is there) and return ROOT.

    Written into a temporary sibling folder renamed to ROOT at the end (an interrupted run never leaves a
    half-written ROOT); ``num_workers`` > 1 renders in processes, with identical files. ``thing_gap``,
    ``palette_gap``, ``camera_gap``: parts of the gap scaled apart (None = ``gap``), as the image generator.
    """
    root = Path(root).expanduser().resolve()
    gaps = dict(zip(syn.GAP_KEYS, (thing_gap, palette_gap, camera_gap), strict=True))
    params = _params(num_source, num_target, num_val, height, width, seed, gap, max_interval, **gaps)
    if min(num_source, num_target, num_val) < 0:
        raise ValueError(f"clip counts must be >= 0, got {split_counts(params)}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    syn.domain_style("target", gap, **gaps)  # refuses a negative part of the gap before anything is written
    if max_interval < 1:
        raise ValueError(f"max_interval must be >= 1 (data.interval), got {max_interval}")
    jobs = [(str(root), split, i, seed, height, width, float(gap), int(max_interval), gaps)
            for split, n in split_counts(params).items() for i in range(n)]  # fmt: skip
    manifest = {
        "splits": {
            split: {
                "domain": SPLIT_DOMAIN[split],
                "count": n,
                "frames_per_clip": split_layout(split, max_interval)[0],
                "labelled_offsets": list(split_layout(split, max_interval)[1]),
                "flows": [list(p) for p in split_layout(split, max_interval)[2]],
            }
            for split, n in split_counts(params).items()
        },
        "current_frame": CURRENT_FRAME,
        "layout": "{split}/frames/<split>_<clip:06d>_<frame:06d>.png, {split}/labels/... (train ids), "
        "{split}/flows/<split>_<clip:06d>_<t:06d>_<s:06d>_int16_x10.npy (exact backward flows)",
        "num_classes": len(CITYSCAPES_CLASSES),
    }
    return write_generated(
        root, generator=_GENERATOR_NAME, version=GENERATOR_VERSION, params=params,
        subdirs=("frames", "labels", "flows"), jobs=jobs, render=_render_and_write, manifest=manifest,
        is_complete=lambda r: _check(r, params) is None, num_workers=num_workers, what="synthetic video",
    )  # fmt: skip


def _files(root: Path, params: dict):
    """Every frame, label and flow file of the clips for ``params``."""
    for split, n in split_counts(params).items():
        for i in range(n):
            yield from clip_files(root, split, i, params["max_interval"])


def _check(root: Path, params: dict) -> str | None:
    """None when ROOT holds the clips for `params`; otherwise why not."""
    return check_generated(
        root, generator=_GENERATOR_NAME, version=GENERATOR_VERSION, params=params, files=_files(root, params)
    )


def ensure_synthetic_video_dataset(
    root: str | Path,
    *,
    num_source: int = 200,
    num_target: int = 200,
    num_val: int = 60,
    height: int = 128,
    width: int = 256,
    seed: int = 0,
    gap: float = 1.0,
    max_interval: int = 2,
    num_workers: int = 1,
    thing_gap: float | None = None,
    palette_gap: float | None = None,
    camera_gap: float | None = None,
) -> Path:
    """Return ROOT at once when it holds the clips for these parameters; (re)generate them otherwise."""
    root = Path(root).expanduser().resolve()
    gaps = dict(zip(syn.GAP_KEYS, (thing_gap, palette_gap, camera_gap), strict=True))
    params = _params(num_source, num_target, num_val, height, width, seed, gap, max_interval, **gaps)
    why = _check(root, params)
    if why is None:
        log.debug("synthetic video clips at %s are up to date", root)
        return root
    log.info("synthetic video: generating %s (%s)", root, why)
    return generate_synthetic_video_dataset(root, **params, num_workers=num_workers)

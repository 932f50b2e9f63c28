"""Procedurally generated two-domain street scenes: the embedded default dataset.

Our design (no counterpart in the reference notes): a tiny stand-in for GTA5 -> Cityscapes that needs no
download, so every method, test and notebook runs out of the box. Each image is a perspective street
(road with lane markings, sidewalks, buildings with windows, walls, fences, poles with traffic lights and
signs, trees, bushes, terrain, sky) populated with the eight Cityscapes vehicle/person classes, all drawn
with a pinhole camera over a flat ground plane and painted far to near so that objects occlude by depth.
Labels are the 19 Cityscapes train ids (255 = ignore: the ego-vehicle hood of the target camera).

Two domains share layout rules and label semantics but differ in appearance:

- ``source`` (GTA-like): flat shading, aliased clean edges, one canonical palette per material (a few
  variants for buildings, cars, clothes) with small per-instance jitter, no noise.
- ``target`` (Cityscapes-like): another palette (paler hazy sky, olive vegetation, darker asphalt, greyer
  sidewalks, brick and sandstone facades, muted car paint), per-material noise textures, per-image exposure /
  white balance, a sun gradient and vignetting, contact shadows, sensor noise, slight blur, a camera pitched
  so that the horizon sits higher, a lower camera, objects 25 % larger, and an ego-vehicle hood.

Calibration at ``gap=1`` (a 0.5 M-parameter U-Net trained on 400 source images at 64x128 for 15 epochs,
CPU, our check): mIoU 0.45 on held-out source images but 0.19 on target val (-57 %; -35 % at gap=0.7);
trained on the target labels instead (oracle) 0.29. A crude DACS-style self-training (EMA teacher, ClassMix,
confidence-weighted pseudo-labels) continued from the source-only model for 500 steps reaches 0.32 on target
val, against 0.21 for source-only training with the same number of extra steps.

``gap`` (default 1.0) scales every target-side difference linearly: ``gap=0`` renders the target exactly
like the source, values above 1 extrapolate. ``thing_gap`` (default: ``gap``) scales, instead of ``gap``, the
two differences that concern only the thing classes: their palettes (``THING_MATERIALS``: paint, clothes,
skin, ...) and their size (``obj_scale``); ``thing_gap=0`` keeps every other difference (stuff palettes,
textures, camera, lighting, noise, hood) and draws the target's vehicles and people like the source's.
``palette_gap`` (default: ``gap``) scales, instead of ``gap``, the palettes of the other materials (road,
building, vegetation, sky, ...). ``camera_gap`` (default: ``gap``) scales, instead of ``gap``, the camera's
pose: its height above the road and the row of the horizon (which also sets how near the nearest visible
ground is); ``gap`` then drives what is left: textures, lighting, noise, blur, hood. Factor studies of the
gap, README "Results"; palettes above 1 extrapolate past the hand-picked target colours (vegetation turns
brown at 1.5). Thing classes follow a long-tailed pixel frequency like GTA5's (car >> person > truck, bus >
rider, motorcycle, bicycle, train) so rare-class sampling matters.

On disk (the generic folder format read by ``src.data.datasets.folder``)::

    ROOT/{source,target,val}/images/NNNNN.png   RGB uint8
    ROOT/{source,target,val}/labels/NNNNN.png   single-channel uint8 train ids, 255 = ignore
    ROOT/classes.txt                            the 19 Cityscapes class names, one a line
    ROOT/manifest.json                          generator version, parameters and counts

``val`` is drawn from the target domain (the target evaluation split). Image ``i`` of split ``s`` is rendered
from ``np.random.default_rng([seed, code(s), i])`` alone, so the files do not depend on ``num_workers``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from src.data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX
from src.data.datasets.generated import check_generated, split_counts, write_generated

log = logging.getLogger(__name__)

GENERATOR_VERSION = 3  # 3: rare classes larger, nearer and more frequent (issue 15, see THING_RATES)
_GENERATOR_NAME = "src.data.datasets.synthetic"
SPLITS: tuple[str, ...] = ("source", "target", "val")
SPLIT_DOMAIN: dict[str, str] = {"source": "source", "target": "target", "val": "target"}
_SPLIT_CODE = {"source": 0, "target": 1, "val": 2}
DOMAINS = ("source", "target")

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS,
 TRAIN, MOTORCYCLE, BICYCLE) = range(19)  # fmt: skip

# ----------------------------------------------------------------------------------------------------------
# Domain styles
# ----------------------------------------------------------------------------------------------------------
# Material colours (RGB). Source and target lists have equal length so that `gap` interpolates entry by entry.
_SOURCE_COLOURS: dict[str, list[tuple[int, int, int]]] = {
    "road": [(104, 100, 112), (96, 94, 104)],
    "marking": [(196, 194, 186)],
    "sidewalk": [(182, 170, 160), (170, 162, 168)],
    "curb": [(204, 198, 190)],
    "building": [(162, 150, 138), (194, 180, 158), (132, 132, 144), (176, 124, 104), (150, 162, 172)],
    "window": [(62, 78, 100), (84, 98, 120)],
    "shop": [(70, 60, 58), (52, 64, 80)],
    "wall": [(178, 174, 160), (152, 152, 146)],
    "fence": [(146, 126, 98), (112, 118, 124)],
    "pole": [(104, 104, 110), (84, 90, 84)],
    "housing": [(48, 48, 48)],
    "sign_red": [(210, 30, 30)],
    "sign_blue": [(30, 80, 200)],
    "sign_yellow": [(240, 200, 30)],
    "sign_white": [(240, 240, 240)],
    "veg": [(72, 146, 56), (56, 124, 46), (92, 156, 62)],
    "trunk": [(98, 76, 54)],
    "terrain": [(142, 178, 96), (162, 172, 102)],
    "sky_top": [(92, 148, 226)],
    "sky_bottom": [(172, 202, 236)],
    "skin": [(232, 190, 160), (192, 140, 110), (122, 86, 62)],
    "hair": [(40, 30, 20), (120, 80, 40), (200, 180, 120)],
    "cloth": [(204, 40, 40), (40, 80, 172), (240, 240, 240), (30, 30, 30), (60, 142, 60), (232, 200, 40),
              (132, 132, 142)],
    "car": [(204, 30, 30), (30, 62, 164), (232, 232, 232), (26, 26, 30), (162, 166, 172), (222, 182, 30),
            (40, 122, 62)],
    "glass": [(48, 60, 78)],
    "tire": [(26, 26, 26)],
    "taillight": [(230, 20, 20)],
    "headlight": [(250, 250, 220)],
    "truck": [(222, 222, 216), (202, 92, 40), (62, 92, 152)],
    "bus": [(232, 172, 32), (204, 42, 42)],
    "train": [(232, 232, 82), (222, 226, 232)],
    "moto": [(182, 30, 30), (32, 32, 32)],
    "bike": [(40, 92, 182), (172, 40, 40), (32, 32, 32)],
    "hood": [(30, 30, 34)],
}  # fmt: skip
_TARGET_COLOURS: dict[str, list[tuple[int, int, int]]] = {
    "road": [(80, 82, 80), (90, 87, 82)],
    "marking": [(170, 170, 164)],
    "sidewalk": [(150, 144, 136), (132, 138, 144)],
    "curb": [(168, 168, 162)],
    "building": [(146, 104, 84), (198, 188, 158), (100, 100, 106), (174, 164, 140), (118, 130, 118)],
    "window": [(38, 44, 50), (108, 118, 128)],
    "shop": [(40, 40, 44), (90, 96, 100)],
    "wall": [(122, 116, 104), (98, 104, 98)],
    "fence": [(88, 100, 88), (150, 150, 148)],
    "pole": [(150, 150, 140), (70, 76, 70)],
    "housing": [(70, 72, 62)],
    "sign_red": [(170, 40, 40)],
    "sign_blue": [(40, 70, 150)],
    "sign_yellow": [(210, 180, 60)],
    "sign_white": [(210, 210, 205)],
    "veg": [(76, 96, 50), (60, 80, 40), (102, 112, 62)],
    "trunk": [(70, 60, 50)],
    "terrain": [(122, 126, 80), (146, 136, 96)],
    "sky_top": [(112, 148, 202)],
    "sky_bottom": [(200, 212, 228)],
    "skin": [(210, 170, 145), (170, 125, 100), (110, 80, 60)],
    "hair": [(35, 30, 25), (90, 70, 50), (160, 140, 100)],
    "cloth": [(80, 32, 36), (40, 50, 80), (198, 198, 194), (30, 30, 32), (70, 80, 60), (168, 150, 92),
              (100, 100, 106)],
    "car": [(120, 26, 30), (36, 46, 76), (210, 210, 210), (30, 30, 32), (140, 144, 146), (92, 92, 96),
            (62, 72, 62)],
    "glass": [(34, 40, 46)],
    "tire": [(30, 30, 30)],
    "taillight": [(180, 40, 40)],
    "headlight": [(220, 220, 210)],
    "truck": [(200, 200, 200), (160, 62, 42), (42, 62, 102)],
    "bus": [(230, 230, 224), (190, 190, 62)],
    "train": [(200, 52, 42), (234, 234, 224)],
    "moto": [(62, 62, 66), (142, 22, 22)],
    "bike": [(30, 30, 30), (122, 122, 126), (62, 82, 122)],
    "hood": [(150, 152, 156)],
}  # fmt: skip

#: Materials of the thing classes only: their target palettes follow ``thing_gap`` (module docstring).
THING_MATERIALS = frozenset(
    {"skin", "hair", "cloth", "car", "glass", "tire", "taillight", "headlight", "truck", "bus", "train",
     "moto", "bike"}
)  # fmt: skip

# Target-only noise textures per class: amplitudes of (low-frequency blotches, mid-frequency grain such as
# leaves, pixel grain), as a relative modulation of brightness at gap = 1.
_TEXTURE = np.zeros((256, 3), np.float32)
for _c, _amp in {
    ROAD: (0.10, 0.06, 0.08), SIDEWALK: (0.08, 0.06, 0.07), BUILDING: (0.14, 0.08, 0.09),
    WALL: (0.12, 0.06, 0.08), FENCE: (0.05, 0.10, 0.06), VEG: (0.12, 0.35, 0.14), TERRAIN: (0.14, 0.22, 0.12),
    SKY: (0.06, 0.02, 0.01), POLE: (0.04, 0.02, 0.04), TRUCK: (0.05, 0.02, 0.04), BUS: (0.05, 0.02, 0.04),
    TRAIN: (0.05, 0.02, 0.04), CAR: (0.04, 0.02, 0.04), PERSON: (0.04, 0.06, 0.05), RIDER: (0.04, 0.06, 0.05),
}.items():  # fmt: skip
    _TEXTURE[_c] = _amp


@dataclass(frozen=True)
class DomainStyle:
    """Everything that differs between the domains, already interpolated by `gap` (our design)."""

    colours: dict[str, np.ndarray]  # material -> (k, 3) float RGB
    horizon: float  # mean horizon row as a fraction of the height
    cam_height: float  # metres
    obj_scale: float  # size multiplier for thing classes
    jitter: float  # per-instance colour jitter (std, RGB units)
    texture: float  # multiplier of `_TEXTURE`
    noise: float  # sensor noise std (RGB units)
    blur: float  # Gaussian blur sigma (pixels)
    vignette: float  # relative darkening at the corners
    sun: float  # relative left-right brightness gradient
    exposure: float  # std of the per-image log exposure / white balance
    shadows: float  # contact-shadow darkening under objects
    hood: float  # probability of an ego-vehicle hood (labelled ignore)
    antialias: bool


#: The optional gaps that scale one group of differences instead of ``gap`` (module docstring); None: gap.
GAP_KEYS = ("thing_gap", "palette_gap", "camera_gap")


@lru_cache(maxsize=16)
def domain_style(
    domain: str,
    gap: float = 1.0,
    thing_gap: float | None = None,
    palette_gap: float | None = None,
    camera_gap: float | None = None,
) -> DomainStyle:
    """The style of `domain`; the target's differences from the source are scaled by `gap`, those of the
    thing classes' palettes and size by `thing_gap`, those of the other palettes by `palette_gap`, the
    camera's height and horizon by `camera_gap` (None: `gap`)."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    g = float(gap) if domain == "target" else 0.0
    if g < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    for key, value in zip(GAP_KEYS, (thing_gap, palette_gap, camera_gap), strict=True):
        if value is not None and value < 0:
            raise ValueError(f"{key} must be >= 0 or null (= gap), got {value}")
    tg = g if thing_gap is None or domain != "target" else float(thing_gap)
    pg = g if palette_gap is None or domain != "target" else float(palette_gap)
    cg = g if camera_gap is None or domain != "target" else float(camera_gap)
    colours = {
        k: np.asarray(src, np.float32)
        + (tg if k in THING_MATERIALS else pg)
        * (np.asarray(_TARGET_COLOURS[k], np.float32) - np.asarray(src))
        for k, src in _SOURCE_COLOURS.items()
    }
    return DomainStyle(
        colours={k: np.clip(v, 0, 255) for k, v in colours.items()},
        horizon=0.46 - 0.07 * cg,
        cam_height=max(0.6, 1.6 - 0.3 * cg),
        obj_scale=1.0 + 0.25 * tg,
        jitter=10.0,
        texture=g,
        noise=4.0 * g,
        blur=0.6 * g,
        vignette=0.35 * g,
        sun=0.25 * g,
        exposure=0.08 * g,
        shadows=min(1.0, 0.45 * g),
        hood=min(1.0, 0.6 * g),
        antialias=g > 0,
    )


# ----------------------------------------------------------------------------------------------------------
# Drawing primitives
# ----------------------------------------------------------------------------------------------------------
_SHIFT = 4  # fractional bits for sub-pixel polygon vertices
_SCALE = float(1 << _SHIFT)


class _Canvas:
    """Image and label drawn together; every primitive paints colour and class at once."""

    def __init__(self, h: int, w: int, antialias: bool) -> None:
        self.h, self.w = h, w
        self.img = np.zeros((h, w, 3), np.uint8)
        self.lbl = np.full((h, w), IGNORE_INDEX, np.uint8)
        self.line_type = cv2.LINE_AA if antialias else cv2.LINE_8

    @staticmethod
    def _pts(polys: list[np.ndarray]) -> list[np.ndarray]:
        """Fixed-point int32 vertices for cv2 (one vectorised conversion for all polygons)."""
        a = np.concatenate(polys) if len(polys) > 1 else np.asarray(polys[0])
        a = np.rint(np.minimum(np.maximum(a, -1e6), 1e6) * _SCALE).astype(np.int32)
        if len(polys) == 1:
            return [a]
        return np.split(a, np.cumsum([len(p) for p in polys[:-1]]))

    def polys(self, polys: list[np.ndarray], colour: np.ndarray | tuple, cls: int) -> None:
        """Fill polygons ((n, 2) float pixel coordinates, x then y); overlapping contours form holes."""
        if not polys:
            return
        pts = self._pts(polys)
        col = tuple(min(255, max(0, int(c))) for c in colour)
        cv2.fillPoly(self.img, pts, col, lineType=self.line_type, shift=_SHIFT)
        cv2.fillPoly(self.lbl, pts, int(cls), lineType=cv2.LINE_8, shift=_SHIFT)

    def poly(self, poly: np.ndarray, colour: np.ndarray | tuple, cls: int) -> None:
        self.polys([poly], colour, cls)

    def seg(self, p0, p1, width: float, colour, cls: int) -> None:
        """A thick segment as a quad (sub-pixel widths still draw a 1-pixel line)."""
        p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
        d = p1 - p0
        n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * (width / 2)
        self.poly(np.stack([p0 + n, p1 + n, p1 - n, p0 - n]), colour, cls)

    def ellipse(self, centre, axes, colour, cls: int, angle: float = 0.0) -> None:
        self.poly(_ellipse_pts(centre, axes, angle), colour, cls)

    def ring(self, centre, r_out: float, r_in: float, colour, cls: int) -> None:
        self.polys([_ellipse_pts(centre, (r_out, r_out)), _ellipse_pts(centre, (r_in, r_in))], colour, cls)


_CIRCLE = np.stack(
    [
        np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
        np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
    ],
    -1,
)


def _ellipse_pts(centre, axes, angle: float = 0.0) -> np.ndarray:
    pts = _CIRCLE * (float(axes[0]), float(axes[1]))
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        pts = pts @ np.array([[ca, sa], [-sa, ca]])
    return pts + (float(centre[0]), float(centre[1]))


@dataclass
class _Camera:
    """Pinhole camera over a flat ground plane: X right, Y up (0 = ground), Z forward (metres)."""

    f: float  # focal length in pixels
    cx: float  # column of the vanishing point
    hy: float  # row of the horizon
    h: float  # camera height above the ground

    def proj(self, x, y, z) -> np.ndarray:
        """Pixel coordinates (..., 2) of world points; arguments broadcast."""
        z = np.maximum(np.asarray(z, np.float64), 0.05)
        u = self.cx + self.f * np.asarray(x, np.float64) / z
        v = self.hy + self.f * (self.h - np.asarray(y, np.float64)) / z
        out = np.empty(np.broadcast_shapes(u.shape, v.shape) + (2,))
        out[..., 0], out[..., 1] = u, v
        return out

    def scale(self, z: float) -> float:
        """Pixels per metre at depth z."""
        return self.f / max(z, 0.05)


class _Scene:
    """One scene being painted: camera, style, canvas, random generator and the depth-sorted object list."""

    def __init__(self, rng: np.random.Generator, style: DomainStyle, h: int, w: int) -> None:
        self.rng, self.style, self.h, self.w = rng, style, h, w
        self.cv = _Canvas(h, w, style.antialias)
        hy = h * (style.horizon + rng.uniform(-0.03, 0.03))
        self.cam = _Camera(
            f=w * rng.uniform(0.55, 0.7),
            cx=w * (0.5 + rng.uniform(-0.05, 0.05)),
            hy=hy,
            h=style.cam_height * rng.uniform(0.95, 1.05),
        )
        self.objects: list[tuple[float, Callable[[], None]]] = []
        self.shadows: list[np.ndarray] = []
        # nearest visible ground depth (bottom image row)
        self.z_bottom = self.cam.f * self.cam.h / max(h - hy, 1.0)

    # colours -----------------------------------------------------------------------------------------------
    def colour(self, key: str, idx: int | None = None, jitter: float | None = None) -> np.ndarray:
        pal = self.style.colours[key]
        c = pal[self.rng.integers(len(pal)) if idx is None else idx % len(pal)]
        j = self.style.jitter if jitter is None else jitter
        c = c * math.exp(self.rng.normal(0, j / 100)) + self.rng.normal(0, j / 2, 3)
        return np.minimum(np.maximum(c, 0), 255)

    def add(self, z: float, draw: Callable[[], None]) -> None:
        self.objects.append((z, draw))

    # 3-D primitives ----------------------------------------------------------------------------------------
    def ground(self, x0: float, x1: float, z0: float, z1: float, colour, cls: int) -> None:
        z0 = max(z0, 0.3)
        if z1 <= z0:
            return
        self.cv.poly(self.cam.proj([x0, x1, x1, x0], 0, [z0, z0, z1, z1]), colour, cls)

    def box(self, x0, x1, y0, y1, z0, z1, colour, cls: int, side_shade: float = 0.78) -> None:
        """Axis-aligned box: the faces seen by the camera, flat-shaded by orientation."""
        p = self.cam.proj
        colour = np.asarray(colour, np.float64)
        if x0 > 0:  # left face visible
            self.cv.poly(p([x0, x0, x0, x0], [y0, y1, y1, y0], [z0, z0, z1, z1]), colour * side_shade, cls)
        elif x1 < 0:
            self.cv.poly(p([x1, x1, x1, x1], [y0, y1, y1, y0], [z0, z0, z1, z1]), colour * side_shade, cls)
        if y1 < self.cam.h:  # top visible
            self.cv.poly(p([x0, x1, x1, x0], y1, [z0, z0, z1, z1]), colour * 1.08, cls)
        elif y0 > self.cam.h:  # bottom visible
            self.cv.poly(p([x0, x1, x1, x0], y0, [z0, z0, z1, z1]), colour * 0.6, cls)
        if z0 > 0.05:
            self.cv.poly(p([x0, x1, x1, x0], [y0, y0, y1, y1], z0), colour, cls)

    def side_quads(self, x: float, ys: np.ndarray, zs: np.ndarray) -> list[np.ndarray]:
        """Quads on the plane X = x; ys, zs: (n, 2) ranges."""
        y0, y1, z0, z1 = ys[:, 0], ys[:, 1], zs[:, 0], zs[:, 1]
        q = self.cam.proj(x, np.stack([y0, y1, y1, y0], 1), np.stack([z0, z0, z1, z1], 1))
        return list(q)

    def front_quads(self, z: float, xs: np.ndarray, ys: np.ndarray) -> list[np.ndarray]:
        """Quads on the plane Z = z; xs, ys: (n, 2) ranges."""
        x0, x1, y0, y1 = xs[:, 0], xs[:, 1], ys[:, 0], ys[:, 1]
        return list(self.cam.proj(np.stack([x0, x1, x1, x0], 1), np.stack([y0, y0, y1, y1], 1), z))

    def shadow(self, x0: float, x1: float, z0: float, z1: float) -> None:
        if self.style.shadows > 0:
            self.shadows.append(self.cam.proj([x0, x1, x1, x0], 0, [z0, z0, z1, z1]))


# ----------------------------------------------------------------------------------------------------------
# Scene layout
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Layout:
    lane_w: float
    road_l: float  # left road edge (negative X)
    road_r: float
    walk_l: float  # sidewalk widths
    walk_r: float
    verge_l: float  # strip between sidewalk and facades
    verge_r: float
    verge_grass_l: bool
    verge_grass_r: bool
    lanes: list[tuple[float, int]]  # (lane centre X, direction +1 away / -1 oncoming)
    parking: list[float]  # parking-lane centres
    cross: tuple[float, float] | None  # (z0, z1) of a cross street
    end_z: float | None  # facade closing the street

    def facade_x(self, side: int) -> float:
        return (
            self.road_r + self.walk_r + self.verge_r if side > 0 else self.road_l - self.walk_l - self.verge_l
        )

    def walk_edges(self, side: int) -> tuple[float, float]:
        return (
            (self.road_r, self.road_r + self.walk_r) if side > 0 else (self.road_l - self.walk_l, self.road_l)
        )

    def in_cross(self, z0: float, z1: float, margin: float = 0.0) -> bool:
        return self.cross is not None and z1 > self.cross[0] - margin and z0 < self.cross[1] + margin


def _sample_layout(rng: np.random.Generator) -> _Layout:
    lw = rng.uniform(3.0, 3.6)
    n_right = int(rng.choice([1, 2], p=[0.65, 0.35]))
    n_left = int(rng.choice([0, 1, 2], p=[0.15, 0.6, 0.25]))
    lanes = [(k * lw, 1) for k in range(n_right)] + [(-(k + 1) * lw, -1) for k in range(n_left)]
    road_r, road_l = lw / 2 + (n_right - 1) * lw, -lw / 2 - n_left * lw
    parking = []
    if rng.random() < 0.6:
        parking.append(road_r + 1.1)
        road_r += 2.2
    if rng.random() < 0.4:
        parking.append(road_l - 1.1)
        road_l -= 2.2
    cross = None
    if rng.random() < 0.35:
        z0 = rng.uniform(14, 45)
        cross = (z0, z0 + rng.uniform(8, 14))
    return _Layout(
        lane_w=lw,
        road_l=road_l,
        road_r=road_r,
        walk_l=rng.uniform(2.0, 4.5),
        walk_r=rng.uniform(2.0, 4.5),
        verge_l=rng.choice([0.0, rng.uniform(1, 5)]),
        verge_r=rng.choice([0.0, rng.uniform(1, 5)]),
        verge_grass_l=rng.random() < 0.6,
        verge_grass_r=rng.random() < 0.6,
        lanes=lanes,
        parking=parking,
        cross=cross,
        end_z=rng.uniform(70, 140) if rng.random() < 0.15 else None,
    )


_Z_FAR = 1e4  # "infinity" for ground stripes (projects onto the horizon)


def _paint_sky(s: _Scene) -> None:
    top, bottom = s.colour("sky_top", jitter=6), s.colour("sky_bottom", jitter=6)
    t = np.clip(np.arange(s.h, dtype=np.float32) / max(s.cam.hy, 1.0), 0, 1)[:, None]
    s.cv.img[:] = np.round(top * (1 - t) + bottom * t).astype(np.uint8)[:, None, :]
    s.cv.lbl[:] = SKY


def _paint_skyline(s: _Scene) -> None:
    """Distant buildings and tree rows standing on the horizon."""
    rng, cam = s.rng, s.cam
    x = -s.w * 0.1
    while x < s.w * 1.1:
        width = s.w * rng.uniform(0.03, 0.12)
        z = rng.uniform(150, 350)
        if rng.random() < 0.3:
            r = cam.scale(z) * rng.uniform(4, 10)
            s.cv.ellipse((x + width / 2, cam.hy - r * 0.4), (width / 2, r), s.colour("veg"), VEG)
        elif rng.random() < 0.85:
            top = cam.hy - cam.scale(z) * rng.uniform(8, 40)
            bot = cam.hy + cam.scale(z) * cam.h
            s.cv.poly(
                np.array([[x, bot], [x + width, bot], [x + width, top], [x, top]]),
                s.colour("building"),
                BUILDING,
            )
        x += width * rng.uniform(0.7, 1.3)


def _paint_ground(s: _Scene, L: _Layout) -> None:
    rng = s.rng
    zn, zf = 0.3, _Z_FAR
    far_cls = TERRAIN if rng.random() < 0.5 else SIDEWALK
    s.ground(-500, 500, zn, zf, s.colour("terrain" if far_cls == TERRAIN else "sidewalk"), far_cls)
    walk_col, curb_col = s.colour("sidewalk"), s.colour("curb")
    for side in (-1, 1):
        fx = L.facade_x(side)
        grass = L.verge_grass_r if side > 0 else L.verge_grass_l
        w0, w1 = L.walk_edges(side)
        outer = fx + side * 3.0
        v0, v1 = (w1, outer) if side > 0 else (outer, w0)
        if grass:
            s.ground(v0, v1, zn, zf, s.colour("terrain"), TERRAIN)
        else:
            s.ground(v0, v1, zn, zf, walk_col, SIDEWALK)
        s.ground(w0, w1, zn, zf, walk_col, SIDEWALK)
        cx0, cx1 = (w0, w0 + 0.25) if side > 0 else (w1 - 0.25, w1)
        s.ground(cx0, cx1, zn, zf, curb_col, SIDEWALK)
        # tree pits / grass patches on the sidewalk
        for _ in range(rng.poisson(1.2)):
            z = rng.uniform(s.z_bottom, 60)
            px = (w1 - rng.uniform(0.3, 1.2)) if side > 0 else (w0 + rng.uniform(0.3, 1.2))
            s.ground(px - 0.6, px + 0.6, z, z + rng.uniform(1.2, 4), s.colour("terrain"), TERRAIN)
    road_col = s.colour("road")
    s.ground(L.road_l, L.road_r, zn, zf, road_col, ROAD)
    if L.cross is not None:
        z0, z1 = L.cross
        walk_w = rng.uniform(2.5, 4.0)
        s.ground(-400, 400, z0 - walk_w, z1 + walk_w, walk_col, SIDEWALK)
        s.ground(-400, 400, z0, z1, road_col, ROAD)
        s.ground(L.road_l, L.road_r, z0 - walk_w, z1 + walk_w, road_col, ROAD)
    if L.end_z is not None:
        s.ground(-400, 400, L.end_z - 12, L.end_z, road_col, ROAD)
        s.ground(-400, 400, L.end_z - 3, L.end_z, walk_col, SIDEWALK)
    # lane markings: a lighter road colour, labelled road
    mark = road_col + 0.7 * (s.colour("marking", jitter=4) - road_col)
    dash0 = rng.uniform(0, 9)
    lane_xs = sorted(x for x, _ in L.lanes)
    for a, b in zip(lane_xs[:-1], lane_xs[1:], strict=False):
        xm = (a + b) / 2
        centre = any(d < 0 for x, d in L.lanes if abs(x - a) < 1e-6) != any(
            d < 0 for x, d in L.lanes if abs(x - b) < 1e-6
        )
        zs = np.arange(dash0, 160, 9.0)
        zz = np.array([[0.3, 200.0]]) if centre else np.stack([zs, zs + 3.0], 1)  # solid / dashed
        for z0, z1 in zz:
            if L.in_cross(z0, z1):
                for a0, a1 in ((z0, L.cross[0] - 4.5), (L.cross[1] + 4.5, z1)):  # type: ignore[index]
                    s.ground(xm - 0.07, xm + 0.07, a0, a1, mark, ROAD)
            else:
                s.ground(xm - 0.07, xm + 0.07, z0, z1, mark, ROAD)
    for x in (L.road_l + 0.3, L.road_r - 0.3):
        for a0, a1 in ((0.3, L.cross[0] - 4.5), (L.cross[1] + 4.5, 200)) if L.cross else ((0.3, 200),):
            s.ground(x - 0.06, x + 0.06, a0, a1, mark, ROAD)
    if L.cross is not None:  # zebra crossing before the cross street
        z0 = L.cross[0] - 4.0
        xs = np.arange(L.road_l + 0.5, L.road_r - 0.4, 1.0)
        quads = s.cam.proj(np.stack([xs, xs + 0.5, xs + 0.5, xs], 1), 0, np.array([z0, z0, z0 + 3, z0 + 3]))
        s.cv.polys(list(quads), mark, ROAD)


def _paint_building(
    s: _Scene, side: int, x_f: float, z0: float, z1: float, height: float, depth: float
) -> None:
    """A facade on the plane X = x_f between z0 and z1 plus its front face at z0, with windows."""
    rng, cam = s.rng, s.cam
    base = s.colour("building")
    x_back = x_f + side * depth
    xa, xb = sorted((x_f, x_back))
    if z0 > 0.5:  # front face (perpendicular to the road)
        s.cv.poly(cam.proj([xa, xb, xb, xa], [0, 0, height, height], z0), base * 0.85, BUILDING)
    z0c = max(z0, 0.5)
    facade = cam.proj([x_f] * 4, [0, height, height, 0], [z0c, z0c, z1, z1])
    s.cv.poly(facade, base, BUILDING)
    floor_h = rng.uniform(2.8, 3.6)
    n_floor = int(height / floor_h)
    win_col = s.colour("window", jitter=6)
    shop = rng.random() < 0.5
    if shop and z1 - z0c > 3:  # shop fronts on the ground floor
        n = max(1, int((z1 - z0c) / rng.uniform(4, 7)))
        zz = np.linspace(z0c, z1, n + 1)
        zs = np.stack([zz[:-1] + 0.5, zz[1:] - 0.5], 1)
        s.cv.polys(s.side_quads(x_f, np.tile([0.3, 2.6], (n, 1)), zs), s.colour("shop", jitter=6), BUILDING)
    # window grid on the facade (only where windows are at least about a pixel wide)
    col_w = rng.uniform(2.5, 4.0)
    win_w, win_h = col_w * rng.uniform(0.35, 0.6), floor_h * rng.uniform(0.35, 0.55)
    zc = np.arange(z0c + col_w / 2, z1 - col_w / 2, col_w)
    zc = zc[cam.f * win_w * abs(x_f) / np.maximum(zc, 1) ** 2 > 0.8]
    floors = np.arange(1 if shop else 0, n_floor)
    if len(zc) and len(floors):
        F, Z = np.meshgrid(floors, zc, indexing="ij")
        yb = F.ravel() * floor_h + floor_h * 0.35
        zm = Z.ravel()
        quads = s.side_quads(
            x_f, np.stack([yb, yb + win_h], 1), np.stack([zm - win_w / 2, zm + win_w / 2], 1)
        )
        if s.style.texture > 0:  # target: windows differ in brightness (reflections, lights, curtains)
            k = rng.integers(0, 3, len(quads))
            for j in range(3):
                s.cv.polys([q for q, kk in zip(quads, k) if kk == j], win_col * (0.8 + 0.25 * j), BUILDING)
        else:
            s.cv.polys(quads, win_col, BUILDING)
    if z0 > 0.5 and depth > 4:  # windows on the front face
        xs = np.arange(xa + 1.5, xb - 1.5, col_w)
        if len(xs) and len(floors) and cam.scale(z0) * win_w > 0.8:
            F, X = np.meshgrid(floors, xs, indexing="ij")
            yb = F.ravel() * floor_h + floor_h * 0.35
            xm = X.ravel()
            quads = s.front_quads(z0, np.stack([xm, xm + win_w], 1), np.stack([yb, yb + win_h], 1))
            s.cv.polys(quads, win_col * 0.85, BUILDING)


def _paint_buildings(s: _Scene, L: _Layout) -> None:
    rng = s.rng
    if L.end_z is not None:  # a facade closing the street, behind everything else
        height = rng.uniform(10, 25)
        s.cv.poly(
            s.cam.proj([-300, 300, 300, -300], [0, 0, height, height], L.end_z),
            s.colour("building"),
            BUILDING,
        )
    for side in (-1, 1):
        x_line = L.facade_x(side)
        z = rng.uniform(-10, s.z_bottom)
        blocks = []
        z_max = L.end_z if L.end_z is not None else 180.0
        while z < z_max:
            length = rng.uniform(8, 28)
            z1 = min(z + length, z_max)
            if L.cross is not None and z1 > L.cross[0] - 3 and z < L.cross[1] + 3:
                if z < L.cross[0] - 3:
                    blocks.append((z, L.cross[0] - 3, True))
                z = L.cross[1] + 3
                blocks.append((z, z + rng.uniform(10, 25), False))  # corner building, wide front face
                z = blocks[-1][1]
                continue
            if rng.random() < 0.12:  # gap between buildings: a garden with trees
                blocks.append((z, z1, None))
            else:
                blocks.append((z, z1, True))
            z = z1
        for z0, z1, kind in reversed(blocks):  # far to near
            x_f = x_line + side * rng.uniform(0, 1.5)
            if kind is None:
                zc = (z0 + z1) / 2
                _tree(s, x_f + side * rng.uniform(0, 4), zc, big=True)()
                continue
            height = rng.uniform(7, 28) if rng.random() < 0.85 else rng.uniform(3.5, 7)
            depth = 60.0 if kind is False else rng.uniform(8, 20)
            _paint_building(s, side, x_f, z0, z1, height, depth)


def _paint_walls_fences(s: _Scene, L: _Layout) -> None:
    """Walls, fences and hedges between sidewalk and facades, far to near."""
    rng = s.rng
    items = []
    for side in (-1, 1):
        for _ in range(rng.poisson(2.0)):  # version 2: 1.3 a side, up to 70 m
            z0 = rng.uniform(s.z_bottom * 0.5, 45)
            z1 = z0 + rng.uniform(5, 25)
            if L.in_cross(z0, z1, 4):
                continue
            kind = rng.choice(["wall", "fence", "hedge"], p=[0.4, 0.4, 0.2])
            x = L.walk_edges(side)[1 if side > 0 else 0] + side * rng.uniform(0.2, 1.0)
            items.append((z0, z1, x, side, kind, rng.uniform(1.2, 2.8)))
    items.sort(key=lambda t: -t[0])
    for z0, z1, x, side, kind, height in items:
        thick = 0.3 * side
        xa, xb = sorted((x, x + thick))
        if kind == "wall":
            s.box(xa, xb, 0, height, z0, z1, s.colour("wall"), WALL, side_shade=0.9)
        elif kind == "hedge":
            col = s.colour("veg")
            s.box(xa - 0.3, xb + 0.3, 0, height, z0, z1, col, VEG, side_shade=0.85)
        else:
            col = s.colour("fence")
            height = min(height, 2.2)
            s.box(xa, xb, 0, height, z0, z1, col * 1.1, FENCE, side_shade=0.9)
            # posts and slats: a darker lattice on the panel
            zp = np.arange(z0, z1, rng.uniform(0.25, 0.6))
            slats = s.cam.proj(
                x,
                np.stack([np.zeros_like(zp), np.full_like(zp, height)], 1)[:, [0, 1, 1, 0]],
                np.stack([zp, zp, zp + 0.06, zp + 0.06], 1),
            )
            s.cv.polys(list(slats), col * 0.6, FENCE)


def _tree(s: _Scene, x: float, z: float, big: bool = False) -> Callable[[], None]:
    rng = s.rng
    trunk_h = rng.uniform(2.0, 3.5) * (1.4 if big else 1.0)
    trunk_w = rng.uniform(0.25, 0.45)
    crown = rng.uniform(1.8, 3.2) * (1.6 if big else 1.0)
    n_blob = int(rng.integers(3, 7))
    blobs = [
        (
            rng.uniform(-0.7, 0.7) * crown,
            trunk_h + crown * rng.uniform(0.4, 1.3),
            crown * rng.uniform(0.55, 0.9),
        )
        for _ in range(n_blob)
    ]
    col_trunk = s.colour("trunk")
    col_leaf = s.colour("veg")
    shades = [math.exp(rng.normal(0, 0.08)) for _ in range(n_blob)]

    def draw() -> None:
        sc = s.cam.scale(z)
        u, v = s.cam.proj(x, 0, z)
        s.cv.poly(
            np.array(
                [
                    [u - sc * trunk_w / 2, v],
                    [u + sc * trunk_w / 2, v],
                    [u + sc * trunk_w / 3, v - sc * (trunk_h + crown * 0.5)],
                    [u - sc * trunk_w / 3, v - sc * (trunk_h + crown * 0.5)],
                ]
            ),
            col_trunk,
            VEG,
        )
        for (bx, by, br), sh in zip(blobs, shades):
            s.cv.ellipse((u + sc * bx, v - sc * by), (sc * br, sc * br * 0.9), col_leaf * sh, VEG)

    return draw


def _bush(s: _Scene, x: float, z: float) -> Callable[[], None]:
    rng = s.rng
    width, height = rng.uniform(0.8, 2.5), rng.uniform(0.5, 1.3)
    col = s.colour("veg")
    n = int(rng.integers(2, 4))
    offs = rng.uniform(-0.5, 0.5, n) * width

    def draw() -> None:
        sc = s.cam.scale(z)
        u, v = s.cam.proj(x, 0, z)
        for o in offs:
            s.cv.ellipse((u + sc * o, v - sc * height * 0.45), (sc * width / 2, sc * height * 0.55), col, VEG)

    return draw


def _pole(s: _Scene, x: float, z: float, side: int, kind: str) -> Callable[[], None]:
    """Street furniture on the curb: a lamp post, a sign post or a traffic-light post (our design)."""
    rng = s.rng
    pole_col, housing = s.colour("pole"), s.colour("housing")
    height = {"lamp": rng.uniform(6, 8.5), "sign": rng.uniform(2.6, 3.4), "light": rng.uniform(3.6, 5.5)}[
        kind
    ]
    width = rng.uniform(0.22, 0.36)  # version 2: 0.12-0.22 m (1-2 px at 10 m on 128x256)
    signs = []
    n_sign = (1 if rng.random() < 0.7 else 2) if kind == "sign" else int(rng.random() < 0.25)
    for k in range(n_sign):
        shape = rng.choice(["circle", "triangle", "square", "diamond"], p=[0.45, 0.2, 0.25, 0.1])
        signs.append(
            (shape, height - 0.5 - k * 1.1 if kind == "sign" else 2.4 - k * 1.1, rng.uniform(0.45, 0.6))
        )
    arm = rng.uniform(1.5, 5.0) if kind == "lamp" or (kind == "light" and rng.random() < 0.35) else 0.0
    lights = [int(rng.integers(3))]
    cols = {k: s.colour(k, jitter=4) for k in ("sign_red", "sign_blue", "sign_yellow", "sign_white")}

    def draw() -> None:
        cam, cv = s.cam, s.cv
        sc = cam.scale(z)
        u, v = cam.proj(x, 0, z)
        cv.poly(
            np.array(
                [
                    [u - sc * width / 2, v],
                    [u + sc * width / 2, v],
                    [u + sc * width / 2, v - sc * height],
                    [u - sc * width / 2, v - sc * height],
                ]
            ),
            pole_col,
            POLE,
        )
        top = cam.proj(x, height, z)
        if arm > 0:
            end = cam.proj(x - side * arm, height + 0.3, z)
            cv.seg(top, end, max(sc * width * 0.6, 0.8), pole_col, POLE)
            if kind == "lamp":
                cv.ellipse(end, (sc * 0.35, sc * 0.12), pole_col * 0.8, POLE)
        if kind == "light":
            at = cam.proj(x - side * arm, height - (0.6 if arm > 0 else 0.5), z) if arm > 0 else top
            bw, bh = 0.5, 1.4  # version 2: 0.32 x 0.95 m
            box = np.array(
                [
                    [at[0] - sc * bw / 2, at[1]],
                    [at[0] + sc * bw / 2, at[1]],
                    [at[0] + sc * bw / 2, at[1] - sc * bh],
                    [at[0] - sc * bw / 2, at[1] - sc * bh],
                ]
            )
            if arm == 0:
                box[:, 1] += sc * 0.05
            cv.poly(box, housing, LIGHT)
            for i, lc in enumerate(((230, 40, 30), (240, 180, 20), (40, 210, 80))):
                c = np.asarray(lc, np.float64) * (1.0 if i == lights[0] else 0.35)
                cv.ellipse(
                    (box[0, 0] + sc * bw / 2, box[2, 1] + sc * bh * (0.2 + 0.3 * i)),
                    (sc * 0.09, sc * 0.09),
                    c,
                    LIGHT,
                )
        for shape, hy, r in signs:
            cu, cvv = cam.proj(x, hy, z)
            rr = sc * r
            if shape == "circle":
                cv.ellipse((cu, cvv), (rr, rr), cols["sign_red"], SIGN)
                cv.ellipse((cu, cvv), (rr * 0.75, rr * 0.75), cols["sign_white"], SIGN)
            elif shape == "triangle":
                tri = np.array([[cu, cvv - rr], [cu + rr, cvv + rr * 0.75], [cu - rr, cvv + rr * 0.75]])
                cv.poly(tri, cols["sign_red"], SIGN)
                cv.poly((tri - [cu, cvv]) * 0.6 + [cu, cvv + rr * 0.1], cols["sign_white"], SIGN)
            elif shape == "square":
                cv.poly(
                    np.array(
                        [[cu - rr, cvv - rr], [cu + rr, cvv - rr], [cu + rr, cvv + rr], [cu - rr, cvv + rr]]
                    ),
                    cols["sign_blue"],
                    SIGN,
                )
                cv.poly(
                    np.array(
                        [
                            [cu - rr * 0.25, cvv - rr * 0.6],
                            [cu + rr * 0.25, cvv - rr * 0.6],
                            [cu + rr * 0.25, cvv + rr * 0.6],
                            [cu - rr * 0.25, cvv + rr * 0.6],
                        ]
                    ),
                    cols["sign_white"],
                    SIGN,
                )
            else:
                dia = np.array([[cu, cvv - rr], [cu + rr, cvv], [cu, cvv + rr], [cu - rr, cvv]])
                cv.poly(dia, cols["sign_white"], SIGN)
                cv.poly((dia - [cu, cvv]) * 0.7 + [cu, cvv], cols["sign_yellow"], SIGN)

    return draw


def _gantry_light(s: _Scene, L: _Layout, z: float) -> Callable[[], None]:
    """A traffic light hanging from a mast arm over the road at an intersection."""
    x_post = L.road_r + 0.5
    arm_to = s.rng.uniform(L.road_l * 0.3, 1.0)
    h = s.rng.uniform(5.5, 6.5)
    pole_col, housing = s.colour("pole"), s.colour("housing")
    lit = int(s.rng.integers(3))

    def draw() -> None:
        cam, cv = s.cam, s.cv
        sc = cam.scale(z)
        u, v = cam.proj(x_post, 0, z)
        cv.poly(
            np.array(
                [[u - sc * 0.1, v], [u + sc * 0.1, v], [u + sc * 0.1, v - sc * h], [u - sc * 0.1, v - sc * h]]
            ),
            pole_col,
            POLE,
        )
        cv.seg(cam.proj(x_post, h, z), cam.proj(arm_to, h, z), max(sc * 0.12, 0.8), pole_col, POLE)
        for xl in (arm_to + 0.4, (arm_to + x_post) / 2):
            a = cam.proj(xl, h - 0.1, z)
            box = np.array(
                [
                    [a[0] - sc * 0.17, a[1]],
                    [a[0] + sc * 0.17, a[1]],
                    [a[0] + sc * 0.17, a[1] + sc * 0.95],
                    [a[0] - sc * 0.17, a[1] + sc * 0.95],
                ]
            )
            cv.poly(box, housing, LIGHT)
            for i, lc in enumerate(((230, 40, 30), (240, 180, 20), (40, 210, 80))):
                c = np.asarray(lc, np.float64) * (1.0 if i == lit else 0.35)
                cv.ellipse((a[0], a[1] + sc * (0.17 + 0.3 * i)), (sc * 0.09, sc * 0.09), c, LIGHT)

    return draw


# things ---------------------------------------------------------------------------------------------------
def _wheel_side(s: _Scene, x: float, zc: float, r: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    return s.cam.proj(x, r + r * np.sin(t), zc + r * np.cos(t))


def _vehicle(s: _Scene, kind: str, x: float, z: float, facing_away: bool) -> Callable[[], None]:
    """Car, truck, bus or tram as boxes with windows, lights and wheels; `z` is the near end."""
    rng, k = s.rng, s.style.obj_scale
    cls = {"car": CAR, "truck": TRUCK, "bus": BUS, "train": TRAIN}[kind]
    if kind == "car":
        w, l, h = rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.9), rng.uniform(1.35, 1.6)
    elif kind == "truck":
        w, l, h = rng.uniform(2.3, 2.55), rng.uniform(6.5, 9), rng.uniform(3.0, 3.8)
    elif kind == "bus":
        w, l, h = 2.55, rng.uniform(11, 13), rng.uniform(3.0, 3.3)
    else:
        w, l, h = 2.6, rng.uniform(22, 32), rng.uniform(3.3, 3.6)
    w, h, l = w * k, h * k, l * k
    body = s.colour({"car": "car", "truck": "truck", "bus": "bus", "train": "train"}[kind])
    cab = s.colour("truck") if kind == "truck" else body
    glass, tire = s.colour("glass", jitter=4), s.colour("tire", jitter=3)
    lamp = s.colour("taillight" if facing_away else "headlight", jitter=4)
    x0, x1 = x - w / 2, x + w / 2
    rng_body = rng.uniform(0.55, 0.65)
    s.shadow(x0 - 0.15 * k, x1 + 0.15 * k, z - 0.2 * k, z + l + 0.2 * k)

    def draw() -> None:
        cam, cv = s.cam, s.cv
        r = 0.33 * k if kind == "car" else 0.5 * k
        clear = r * 0.8
        side_x = x0 if x0 > 0 else (x1 if x1 < 0 else None)
        axles = (
            [z + 0.85 * k, z + l - 0.95 * k] if kind == "car" else [z + 1.3 * k, z + 2.6 * k, z + l - 1.5 * k]
        )
        if kind == "train":
            axles = [z + 2 * k, z + 3.5 * k, z + l - 3.5 * k, z + l - 2 * k]
        # tyres seen from behind under the body
        for xa in (x0 + 0.05, x1 - 0.3 * k):
            s.box(xa, xa + 0.25 * k, 0, clear + 0.1, z + 0.4 * k, axles[0] + r, tire, cls)
        if kind == "car":
            hb = h * rng_body
            s.box(x0, x1, clear * 0.7, hb, z, z + l, body, cls)
            cz0, cz1 = z + l * 0.22, z + l * 0.72
            s.box(x0 + 0.12 * k, x1 - 0.12 * k, hb, h, cz0, cz1, body, cls)
            # windows: rear/front screen and side glass
            cv.poly(
                cam.proj(
                    [x0 + 0.22 * k, x1 - 0.22 * k, x1 - 0.22 * k, x0 + 0.22 * k],
                    [hb + 0.06 * k, hb + 0.06 * k, h - 0.07 * k, h - 0.07 * k],
                    cz0,
                ),
                glass,
                cls,
            )
            if side_x is not None:
                sx = side_x + (0.12 * k if side_x == x0 else -0.12 * k)
                cv.polys(
                    s.side_quads(
                        sx,
                        np.array([[hb + 0.06 * k, h - 0.08 * k]] * 2),
                        np.array(
                            [
                                [cz0 + 0.12 * k, (cz0 + cz1) / 2 - 0.05 * k],
                                [(cz0 + cz1) / 2 + 0.05 * k, cz1 - 0.15 * k],
                            ]
                        ),
                    ),
                    glass,
                    cls,
                )
            ly = hb - 0.22 * k
            for xl in (x0 + 0.08 * k, x1 - 0.38 * k):
                cv.poly(
                    cam.proj([xl, xl + 0.3 * k, xl + 0.3 * k, xl], [ly, ly, ly + 0.14 * k, ly + 0.14 * k], z),
                    lamp,
                    cls,
                )
        else:
            if kind == "truck":
                cab_l = 2.3 * k
                s.box(x0 + 0.05, x1 - 0.05, clear * 0.7, h * 0.82, z + l - cab_l, z + l, cab, cls)
                s.box(x0, x1, clear * 0.7, h, z, z + l - cab_l - 0.3 * k, body, cls)
                # rear doors
                xm = (x0 + x1) / 2
                cv.seg(
                    cam.proj(xm, clear + 0.1, z),
                    cam.proj(xm, h - 0.15, z),
                    max(cam.scale(z) * 0.05, 0.6),
                    body * 0.6,
                    cls,
                )
            else:
                s.box(x0, x1, clear * 0.7, h, z, z + l, body, cls)
                band = [1.15 * k, h - 0.45 * k]
                if side_x is not None:
                    n = int(l / (1.6 * k))
                    zz = np.linspace(z + 0.6 * k, z + l - 0.6 * k, n + 1)
                    cv.polys(
                        s.side_quads(
                            side_x,
                            np.tile(band, (n, 1)),
                            np.stack([zz[:-1] + 0.08 * k, zz[1:] - 0.08 * k], 1),
                        ),
                        glass,
                        cls,
                    )
                cv.poly(
                    cam.proj(
                        [x0 + 0.2 * k, x1 - 0.2 * k, x1 - 0.2 * k, x0 + 0.2 * k],
                        [band[0], band[0], band[1], band[1]],
                        z,
                    ),
                    glass,
                    cls,
                )
                if kind == "train":  # pantograph
                    p0, p1 = cam.proj(x, h, z + l / 2), cam.proj(x, h + 1.2 * k, z + l / 2 + 1.0)
                    cv.seg(p0, p1, max(cam.scale(z + l / 2) * 0.06, 0.7), tire, cls)
            ly = clear + 0.35 * k
            for xl in (x0 + 0.1 * k, x1 - 0.4 * k):
                cv.poly(
                    cam.proj([xl, xl + 0.3 * k, xl + 0.3 * k, xl], [ly, ly, ly + 0.2 * k, ly + 0.2 * k], z),
                    lamp,
                    cls,
                )
        if side_x is not None:
            sx = side_x + (-0.02 if side_x == x0 else 0.02)
            cv.polys([_wheel_side(s, sx, za, r) for za in axles], tire, cls)

    return draw


def _limb(cv: _Canvas, a, b, width: float, colour, cls: int) -> None:
    cv.seg(a, b, max(width, 0.7), colour, cls)


def _person_parts(s: _Scene, height: float) -> dict:
    rng = s.rng
    return {
        "h": height,
        "shirt": s.colour("cloth"),
        "pants": s.colour("cloth"),
        "skin": s.colour("skin", jitter=4),
        "hair": s.colour("hair", jitter=4),
        "stride": rng.uniform(-0.25, 0.25),
        "swing": rng.uniform(-0.15, 0.15),
        "wide": rng.uniform(0.85, 1.15),
        "bag": rng.random() < 0.2,
    }


def _person(s: _Scene, x: float, z: float) -> Callable[[], None]:
    """A pedestrian: head, torso, arms and legs as polygons (our design)."""
    P = _person_parts(s, s.rng.uniform(1.55, 1.9) * s.style.obj_scale)
    s.shadow(x - 0.35 * P["h"] / 1.75, x + 0.35 * P["h"] / 1.75, z - 0.15, z + 0.3)

    def draw() -> None:
        cv, sc = s.cv, s.cam.scale(z)
        u, v = s.cam.proj(x, 0, z)
        H, wd = P["h"], P["wide"] * P["h"] / 1.75

        def pt(dx, y):
            return (u + sc * dx * wd, v - sc * y * H)

        st, sw = P["stride"], P["swing"]
        _limb(cv, pt(-0.08, 0.5), pt(-0.08 - st, 0.0), sc * 0.13 * wd, P["pants"], PERSON)
        _limb(cv, pt(0.08, 0.5), pt(0.08 + st, 0.0), sc * 0.13 * wd, P["pants"], PERSON)
        torso = np.array([pt(-0.2, 0.82), pt(0.2, 0.82), pt(0.15, 0.47), pt(-0.15, 0.47)])
        cv.poly(torso, P["shirt"], PERSON)
        _limb(cv, pt(-0.2, 0.8), pt(-0.25 - sw, 0.46), sc * 0.08 * wd, P["shirt"] * 0.9, PERSON)
        _limb(cv, pt(0.2, 0.8), pt(0.25 + sw, 0.46), sc * 0.08 * wd, P["shirt"] * 0.9, PERSON)
        cv.ellipse(pt(0, 0.91), (sc * 0.1 * wd, sc * 0.12 * H / 1.75), P["skin"], PERSON)
        cv.ellipse(pt(0, 0.935), (sc * 0.1 * wd, sc * 0.07 * H / 1.75), P["hair"], PERSON)
        if P["bag"]:
            cv.poly(
                np.array([pt(0.22, 0.62), pt(0.42, 0.62), pt(0.42, 0.45), pt(0.22, 0.45)]),
                P["pants"] * 0.7,
                PERSON,
            )

    return draw


def _two_wheeler(s: _Scene, x: float, z: float, motor: bool, rider: bool) -> Callable[[], None]:
    """Bicycle or motorcycle in side view, optionally ridden (rider and vehicle labelled separately)."""
    rng, k = s.rng, s.style.obj_scale
    d = 1.0 if rng.random() < 0.5 else -1.0
    frame, tire = s.colour("moto" if motor else "bike"), s.colour("tire", jitter=3)
    cls = MOTORCYCLE if motor else BICYCLE
    P = _person_parts(s, rng.uniform(1.6, 1.85))
    helmet = s.colour("cloth")
    s.shadow(x - 0.4 * k, x + 0.4 * k, z - 0.3, z + 0.5)

    def draw() -> None:
        cv, sc = s.cv, s.cam.scale(z) * k
        u, v = s.cam.proj(x, 0, z)

        def pt(dx, y):
            return (u + sc * dx * d, v - sc * y)

        if motor:
            r = 0.32
            for wx in (-0.7, 0.7):
                cv.ellipse(pt(wx, r), (sc * r, sc * r), tire, cls)
                cv.ellipse(pt(wx, r), (sc * r * 0.45, sc * r * 0.45), frame * 0.7 + 60, cls)
            body = np.array(
                [
                    pt(-0.85, 0.62),
                    pt(-0.5, 0.85),
                    pt(0.05, 0.82),
                    pt(0.15, 0.98),
                    pt(0.5, 0.98),
                    pt(0.55, 0.75),
                    pt(0.25, 0.35),
                    pt(-0.25, 0.35),
                ]
            )
            cv.poly(body, frame, cls)
            _limb(cv, pt(0.5, 0.95), pt(0.7, r), sc * 0.07, frame * 0.6, cls)
            _limb(cv, pt(0.45, 1.1), pt(0.6, 1.1), sc * 0.05, tire, cls)
            hip, shoulder, hand, knee, foot = (-0.2, 0.95), (0.12, 1.48), (0.5, 1.1), (0.2, 0.75), (0.0, 0.4)
        else:
            r = 0.34
            for wx in (-0.52, 0.52):
                cv.ring(pt(wx, r), sc * r, max(0.0, sc * r - max(0.06 * sc, 0.9)), tire, cls)
            bb, st, ht, rh, fh = (0, 0.3), (-0.12, 0.85), (0.42, 0.85), (-0.52, r), (0.52, r)
            lw = sc * 0.05
            for a, b in ((rh, bb), (rh, st), (bb, st), (bb, ht), (st, ht), (ht, fh), (ht, (0.38, 1.0))):
                _limb(cv, pt(*a), pt(*b), lw, frame, cls)
            _limb(cv, pt(-0.22, 0.9), pt(-0.02, 0.9), sc * 0.06, tire, cls)
            hip, shoulder, hand, knee, foot = (
                (-0.12, 0.95),
                (0.18, 1.5),
                (0.38, 1.02),
                (0.15, 0.62),
                (0.05, 0.22),
            )
        if not rider:
            return
        _limb(cv, pt(*hip), pt(*knee), sc * 0.14, P["pants"], RIDER)
        _limb(cv, pt(*knee), pt(*foot), sc * 0.11, P["pants"], RIDER)
        cv.poly(
            np.array(
                [
                    pt(hip[0] - 0.12, hip[1] - 0.05),
                    pt(hip[0] + 0.12, hip[1] - 0.05),
                    pt(shoulder[0] + 0.12, shoulder[1]),
                    pt(shoulder[0] - 0.14, shoulder[1]),
                ]
            ),
            P["shirt"],
            RIDER,
        )
        _limb(cv, pt(*shoulder), pt(*hand), sc * 0.08, P["shirt"] * 0.9, RIDER)
        head = pt(shoulder[0] + 0.06, shoulder[1] + 0.16)
        cv.ellipse(head, (sc * 0.11, sc * 0.12), P["skin"], RIDER)
        if motor:
            cv.ellipse((head[0], head[1] - sc * 0.02), (sc * 0.14, sc * 0.14), helmet, RIDER)
        else:
            cv.ellipse((head[0], head[1] - sc * 0.05), (sc * 0.11, sc * 0.07), P["hair"], RIDER)

    return draw


# Expected counts per image of each thing (Poisson means), tuned for a GTA5-like long tail of pixel
# frequencies: car >> person > truck ~ bus > rider, motorcycle, bicycle, train (tests/unit/test_synthetic.py).
# Version 3 (issue 15): the rare classes are placed nearer, drawn larger and about twice as often as in
# version 2, so that a short CPU run can learn them (at 128x256 a GTA-like scene draws a distant rider in a
# handful of pixels, and version 2's oracle learnt only 9 of the 19 classes in 1000 steps); the pixel
# frequencies stay long-tailed in GTA5's order (car >> person > truck, bus > rider, motorcycle, bicycle,
# train; tests/unit/test_synthetic.py).
THING_RATES: dict[str, float] = {
    "car_lane": 1.6,
    "car_parked": 2.2,
    "person": 4.0,
    "truck": 0.2,
    "bus": 0.2,
    "train": 0.1,
    "cyclist": 0.25,
    "motorcyclist": 0.18,
    "bicycle": 0.18,
    "motorcycle": 0.12,
}
#: farthest placement (metres) of lane vehicles, pedestrians and two-wheelers (version 2: 90, 60, 50)
THING_FAR: dict[str, float] = {"vehicle": 60.0, "person": 35.0, "two_wheeler": 35.0}


def _z_sample(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _place_things(s: _Scene, L: _Layout) -> None:
    rng, zb = s.rng, s.z_bottom
    occupied: list[tuple[float, float, float]] = []  # (x, z0, z1) of vehicles in lanes

    def free(x: float, z0: float, z1: float) -> bool:
        return all(abs(x - ox) > 1.5 or z1 < oz0 - 1 or z0 > oz1 + 1 for ox, oz0, oz1 in occupied)

    def lane_vehicle(kind: str) -> None:
        if not L.lanes:
            return
        lx, d = L.lanes[int(rng.integers(len(L.lanes)))]
        x = lx + rng.uniform(-0.3, 0.3)
        z = _z_sample(rng, max(zb * 0.9, 4.0 if kind == "car" else 9.0), THING_FAR["vehicle"])
        draw = _vehicle(s, kind, x, z, facing_away=d > 0)
        length = 30.0 if kind == "train" else 12.0 if kind in ("bus", "truck") else 5.0
        if free(x, z, z + length):
            occupied.append((x, z, z + length))
            s.add(z, draw)

    for kind, key in (("train", "train"), ("bus", "bus"), ("truck", "truck"), ("car", "car_lane")):
        for _ in range(rng.poisson(THING_RATES[key])):
            lane_vehicle(kind)
    for px in L.parking:
        for _ in range(rng.poisson(THING_RATES["car_parked"] * 1.5)):
            z = rng.uniform(zb * 0.8, 60)
            if L.in_cross(z, z + 5, 4):
                continue
            draw = _vehicle(s, "car", px + rng.uniform(-0.15, 0.15), z, facing_away=True)
            if free(px, z, z + 5):
                occupied.append((px, z, z + 5))
                s.add(z, draw)

    def walk_point(side: int) -> tuple[float, float]:
        a, b = L.walk_edges(side)
        return rng.uniform(a + 0.4, b - 0.3), _z_sample(rng, max(zb * 0.8, 3.0), THING_FAR["person"])

    for _ in range(rng.poisson(THING_RATES["person"])):
        if rng.random() < 0.12 and L.cross is not None:  # on the zebra crossing
            x, z = rng.uniform(L.road_l, L.road_r), L.cross[0] - rng.uniform(1.5, 3.5)
        else:
            x, z = walk_point(1 if rng.random() < 0.55 else -1)
        s.add(z, _person(s, x, z))
    for key, motor, rider in (
        ("cyclist", False, True),
        ("motorcyclist", True, True),
        ("bicycle", False, False),
        ("motorcycle", True, False),
    ):
        for _ in range(rng.poisson(THING_RATES[key])):
            if rider:
                x = rng.uniform(L.road_l + 0.5, L.road_r - 0.5)
                z = _z_sample(rng, max(zb, 5.0), THING_FAR["two_wheeler"])
            else:
                x, z = walk_point(1 if rng.random() < 0.6 else -1)
            s.add(z, _two_wheeler(s, x, z, motor, rider))


def _place_furniture(s: _Scene, L: _Layout) -> None:
    rng, zb = s.rng, s.z_bottom
    for side in (-1, 1):
        a, b = L.walk_edges(side)
        curb_x = a + 0.5 if side > 0 else b - 0.5
        z = rng.uniform(zb * 0.6, zb + 10)
        while z < 90:
            if not L.in_cross(z, z, 2):
                kind = rng.choice(["lamp", "sign", "light"], p=[0.5, 0.35, 0.15])
                s.add(z, _pole(s, curb_x, z, side, str(kind)))
            z += rng.uniform(9, 25)
        if rng.random() < 0.55:  # a row of trees
            tx = (b - rng.uniform(0.6, 1.2)) if side > 0 else (a + rng.uniform(0.6, 1.2))
            z = rng.uniform(zb * 0.5, zb + 8)
            while z < 100:
                if not L.in_cross(z, z, 3):
                    s.add(z, _tree(s, tx + rng.uniform(-0.2, 0.2), z))
                z += rng.uniform(7, 14)
        for _ in range(rng.poisson(1.0)):  # bushes on the verge
            v0 = L.facade_x(side)
            x = v0 - side * rng.uniform(0.5, 1.5)
            z = rng.uniform(zb, 60)
            if not L.in_cross(z, z, 3):
                s.add(z + 3, _bush(s, x, z))
    if L.cross is not None:
        z0 = L.cross[0] - rng.uniform(0.5, 2.0)
        s.add(z0, _gantry_light(s, L, z0))
        for side in (-1, 1):
            a, b = L.walk_edges(side)
            s.add(z0 - 0.2, _pole(s, a + 0.5 if side > 0 else b - 0.5, z0 - 0.2, side, "light"))


def _paint_shadows(s: _Scene) -> None:
    if not s.shadows:
        return
    mask = np.zeros((s.h, s.w), np.uint8)
    pts = _Canvas._pts(s.shadows)
    cv2.fillPoly(mask, pts, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.2)
    ground = np.isin(s.cv.lbl, (ROAD, SIDEWALK, TERRAIN))
    k = 1.0 - s.style.shadows * (mask.astype(np.float32) / 255.0) * ground
    s.cv.img[:] = np.clip(s.cv.img * k[..., None], 0, 255).astype(np.uint8)


def _paint_hood(s: _Scene) -> None:
    """Ego-vehicle bonnet at the bottom of the target camera's view, labelled ignore like Cityscapes'."""
    h, w, rng = s.h, s.w, s.rng
    top = h * (1 - rng.uniform(0.06, 0.11))
    xs = np.linspace(-0.05 * w, 1.05 * w, 24)
    ys = top + (h - top) * 1.3 * ((xs - w / 2) / (0.6 * w)) ** 2
    pts = np.concatenate([np.stack([xs, ys], 1), [[1.05 * w, h + 2], [-0.05 * w, h + 2]]])
    s.cv.poly(pts, s.colour("hood", jitter=5), IGNORE_INDEX)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _postprocess(s: _Scene) -> np.ndarray:
    """Target-only appearance: textures, exposure, lighting gradient, blur and sensor noise (all x gap)."""
    st, rng, h, w = s.style, s.rng, s.h, s.w
    img = s.cv.img.astype(np.float32)
    if st.texture > 0:
        lbl = s.cv.lbl
        low = _value_noise(rng, h, w, max(h / 8, 2))
        mid = _value_noise(rng, h, w, 1.6)
        fine = rng.standard_normal((h, w)).astype(np.float32)
        amp = _TEXTURE[lbl] * st.texture
        mod = 1 + amp[..., 0] * low + amp[..., 1] * mid + amp[..., 2] * fine
        img *= np.clip(mod, 0.3, 2.0)[..., None]
    if st.exposure > 0:
        img *= np.exp(rng.normal(0, st.exposure) + rng.normal(0, st.exposure / 2, 3)).astype(np.float32)
    if st.vignette > 0 or st.sun > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        xn, yn = (xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)
        sun_dir = rng.uniform(-1, 1)
        gain = (1 - st.vignette * 0.5 * (xn**2 + yn**2)) * (1 + st.sun * sun_dir * xn)
        img *= gain[..., None]
    if st.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), st.blur)
    if st.noise > 0:
        img += rng.normal(0, st.noise, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_scene(
    rng: np.random.Generator,
    *,
    domain: str,
    height: int,
    width: int,
    gap: float = 1.0,
    thing_gap: float | None = None,
    palette_gap: float | None = None,
    camera_gap: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one street scene. Returns (image HxWx3 uint8 RGB, label HxW uint8 train ids, 255 = ignore).

    The output depends only on the state of `rng` and the arguments. `gap` scales the target domain's
    difference from the source (0 = identical distributions), `thing_gap` that of the thing classes' palettes
    and size, `palette_gap` that of the other palettes, `camera_gap` that of the camera's height and horizon
    (None: `gap`); all are ignored for the source.
    """
    if height < 8 or width < 8:
        raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
    style = domain_style(domain, float(gap), _opt(thing_gap), _opt(palette_gap), _opt(camera_gap))
    s = _Scene(rng, style, height, width)
    L = _sample_layout(rng)
    _paint_sky(s)
    _paint_skyline(s)
    _paint_ground(s, L)
    _paint_buildings(s, L)
    _paint_walls_fences(s, L)
    _place_furniture(s, L)
    _place_things(s, L)
    # things cast contact shadows onto the ground before they are painted
    draws = sorted(s.objects, key=lambda t: -t[0])
    _paint_shadows(s)
    for _, draw in draws:
        draw()
    if rng.random() < style.hood:
        _paint_hood(s)
    img = _postprocess(s) if domain == "target" and gap > 0 else s.cv.img
    return img, s.cv.lbl


# ----------------------------------------------------------------------------------------------------------
# Dataset on disk
# ----------------------------------------------------------------------------------------------------------
def _split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])


def _stem(index: int) -> str:
    return f"{index:05d}"


def _opt(x: float | None) -> float | None:
    return None if x is None else float(x)


def _render_and_write(job: tuple) -> None:
    root, split, index, seed, height, width, gap, gaps = job
    img, lbl = render_scene(
        _split_rng(seed, split, index),
        domain=SPLIT_DOMAIN[split],
        height=height,
        width=width,
        gap=gap,
        **gaps,
    )
    base = Path(root) / split
    for path, arr in (
        (base / "images" / f"{_stem(index)}.png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR)),
        (base / "labels" / f"{_stem(index)}.png", lbl),
    ):
        if not cv2.imwrite(str(path), arr):
            raise OSError(f"cannot write {path}")


def _params(
    num_source: int,
    num_target: int,
    num_val: int,
    height: int,
    width: int,
    seed: int,
    gap: float,
    thing_gap: float | None = None,
    palette_gap: float | None = None,
    camera_gap: float | None = None,
) -> dict:
    params = {
        "num_source": int(num_source),
        "num_target": int(num_target),
        "num_val": int(num_val),
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
        "gap": float(gap),
    }
    # recorded only when set: the default data's manifest stays as it was
    for key, value in zip(GAP_KEYS, (thing_gap, palette_gap, camera_gap), strict=True):
        if value is not None:
            params[key] = float(value)
    return params


def generate_synthetic_dataset(
    root: str | Path,
    *,
    num_source: int = 400,
    num_target: int = 400,
    num_val: int = 100,
    height: int = 128,
    width: int = 256,
    seed: int = 0,
    gap: float = 1.0,
    thing_gap: float | None = None,
    palette_gap: float | None = None,
    camera_gap: float | None = None,
    num_workers: int = 1,
) -> Path:
    """Render the dataset into ROOT (replacing what is there) and return ROOT.

    Written into a temporary sibling folder which is renamed to ROOT at the end, so an interrupted run
    never leaves a half-written ROOT. Uses `num_workers` processes when > 1; the files are identical
    for any `num_workers`.
    """
    root = Path(root).expanduser().resolve()
    params = _params(
        num_source, num_target, num_val, height, width, seed, gap, thing_gap, palette_gap, camera_gap
    )
    if min(num_source, num_target, num_val) < 0:
        raise ValueError(f"image counts must be >= 0, got {split_counts(params)}")
    domain_style("target", float(gap), _opt(thing_gap), _opt(palette_gap), _opt(camera_gap))  # checks, early
    counts = split_counts(params)
    gaps = {k: params.get(k) for k in GAP_KEYS}
    jobs = [
        (str(root), s, i, seed, height, width, float(gap), gaps) for s, n in counts.items() for i in range(n)
    ]
    manifest = {
        "splits": {split: {"domain": SPLIT_DOMAIN[split], "count": n} for split, n in counts.items()},
        "layout": "{split}/images/NNNNN.png (RGB), {split}/labels/NNNNN.png (train ids, 255 = ignore)",
        "num_classes": len(CITYSCAPES_CLASSES),
    }
    return write_generated(
        root, generator=_GENERATOR_NAME, version=GENERATOR_VERSION, params=params,
        subdirs=("images", "labels"), jobs=jobs, render=_render_and_write, manifest=manifest,
        is_complete=lambda r: _check(r, params) is None, num_workers=num_workers, what="synthetic dataset",
    )  # fmt: skip


def _files(root: Path, params: dict):
    """Every image and label file of the dataset for ``params``."""
    for split, n in split_counts(params).items():
        for sub in ("images", "labels"):
            for i in range(n):
                yield root / split / sub / f"{_stem(i)}.png"


def _check(root: Path, params: dict) -> str | None:
    """None when ROOT holds the dataset for `params`; otherwise why not."""
    return check_generated(
        root, generator=_GENERATOR_NAME, version=GENERATOR_VERSION, params=params, files=_files(root, params)
    )


def ensure_synthetic_dataset(
    root: str | Path,
    *,
    num_source: int = 400,
    num_target: int = 400,
    num_val: int = 100,
    height: int = 128,
    width: int = 256,
    seed: int = 0,
    gap: float = 1.0,
    thing_gap: float | None = None,
    palette_gap: float | None = None,
    camera_gap: float | None = None,
    num_workers: int = 1,
) -> Path:
    """Return ROOT at once when it holds the dataset for these parameters; (re)generate it otherwise."""
    root = Path(root).expanduser().resolve()
    params = _params(
        num_source, num_target, num_val, height, width, seed, gap, thing_gap, palette_gap, camera_gap
    )
    why = _check(root, params)
    if why is None:
        log.debug("synthetic dataset at %s is up to date", root)
        return root
    log.info("synthetic dataset: generating %s (%s)", root, why)
    return generate_synthetic_dataset(root, **params, num_workers=num_workers)

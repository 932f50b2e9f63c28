"""Plain numpy / PIL rendering of segmentation data: colourise, overlay, heat maps, titled grids.

Used by the W&B / PNG image panels (`src/callbacks/image_panels.py`), the prediction CLI (`src/predict.py`)
and the notebooks. Every function takes numpy arrays (or anything `np.asarray` accepts, e.g. CPU tensors)
and returns HxWx3 uint8 RGB arrays, so the output can be saved with PIL, logged to W&B or shown with
matplotlib.

Conventions (src/data/classes.py): labels are train ids, 255 = ignore, painted black by default; class
colours are the Cityscapes palette (`palette_for`, distinct extra colours past 19 classes). Images in the
network's input space are ImageNet-normalised (src/data/transforms.py `to_tensor`): `denormalize` undoes
that.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from src.data.classes import IGNORE_INDEX, palette_for
from src.data.transforms import MEAN, STD

__all__ = [
    "denormalize",
    "colorize",
    "overlay",
    "heatmap",
    "confusion_image",
    "legend",
    "label_tile",
    "resize_to_height",
    "grid",
    "save_png",
]

# Five anchors of matplotlib's viridis, interpolated linearly (0 = dark purple, 1 = yellow).
_VIRIDIS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def _hw3(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {a.shape}")
    return a[..., :3]


def denormalize(x: np.ndarray, *, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> np.ndarray:
    """3xHxW ImageNet-normalised image (the network input) -> HxWx3 uint8 RGB, clipped to 0..255."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"expected a 3xHxW normalised image, got shape {a.shape}")
    a = a * np.asarray(std, np.float64).reshape(3, 1, 1) + np.asarray(mean, np.float64).reshape(3, 1, 1)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def colorize(
    label: np.ndarray,
    *,
    palette: Sequence[Sequence[int]] | None = None,
    num_classes: int = 19,
    ignore_index: int = IGNORE_INDEX,
    ignore_color: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """HxW train-id map -> HxWx3 uint8 in the Cityscapes palette; ignore / unknown ids -> ignore_color."""
    lab = np.asarray(label)
    if lab.ndim == 3 and lab.shape[0] == 1:
        lab = lab[0]
    if lab.ndim != 2:
        raise ValueError(f"expected an HxW label map, got shape {lab.shape}")
    pal = np.asarray(palette if palette is not None else palette_for(num_classes), dtype=np.uint8)
    lut = np.tile(np.asarray(ignore_color, np.uint8), (256, 1))
    n = min(len(pal), 256)
    lut[:n] = pal[:n]
    if 0 <= ignore_index < 256:
        lut[ignore_index] = ignore_color
    idx = lab.astype(np.int64)
    out_of_range = (idx < 0) | (idx > 255)
    rgb = lut[np.clip(idx, 0, 255)]
    rgb[out_of_range] = ignore_color
    return rgb


def overlay(
    image: np.ndarray,
    label: np.ndarray,
    *,
    alpha: float = 0.5,
    palette: Sequence[Sequence[int]] | None = None,
    num_classes: int = 19,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Blend the colourised label into the image: (1-alpha)*image + alpha*colour; ignore pixels untouched."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _hw3(image).astype(np.float64)
    lab = np.asarray(label)
    if lab.shape[-2:] != img.shape[:2]:
        raise ValueError(f"label {lab.shape} and image {img.shape[:2]} differ in size")
    col = colorize(lab, palette=palette, num_classes=num_classes, ignore_index=ignore_index).astype(
        np.float64
    )
    out = (1.0 - alpha) * img + alpha * col
    keep = (lab == ignore_index)[..., None]
    out = np.where(keep, img, out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def heatmap(values: np.ndarray, *, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """HxW floats -> HxWx3 uint8 viridis-like colours (vmin dark purple, vmax yellow); NaN -> black."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 3 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 2:
        raise ValueError(f"expected an HxW map, got shape {v.shape}")
    if vmax <= vmin:
        raise ValueError(f"vmax ({vmax}) must be > vmin ({vmin})")
    nan = np.isnan(v)
    t = np.clip((np.nan_to_num(v, nan=vmin) - vmin) / (vmax - vmin), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lo = np.floor(t).astype(np.int64).clip(0, len(_VIRIDIS) - 2)
    f = (t - lo)[..., None]
    rgb = (1.0 - f) * _VIRIDIS[lo] + f * _VIRIDIS[lo + 1]
    rgb[nan] = 0.0
    return np.rint(rgb).astype(np.uint8)


def confusion_image(confmat: np.ndarray, *, cell: int = 12) -> np.ndarray:
    """C x C confusion matrix (rows = ground truth) -> heat map of the row-normalised matrix (recall per
    cell), each entry a `cell` x `cell` square; rows without ground-truth pixels are black."""
    cm = np.asarray(confmat, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, cm / np.where(rows > 0, rows, 1.0), np.nan)
    return np.kron(heatmap(norm), np.ones((cell, cell, 1), np.uint8))


def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def legend(
    class_names: Sequence[str],
    *,
    palette: Sequence[Sequence[int]] | None = None,
    width: int = 640,
    swatch: int = 12,
) -> np.ndarray:
    """A strip listing each class with its colour swatch, wrapped to `width` pixels."""
    pal = list(palette if palette is not None else palette_for(len(class_names)))
    font = _font()
    entry_w = swatch + 6 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(n, font=font))
                               for n in class_names) + 12  # fmt: skip
    per_row = max(1, width // entry_w)
    rows = (len(class_names) + per_row - 1) // per_row
    im = Image.new("RGB", (width, rows * (swatch + 6) + 4), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for i, name in enumerate(class_names):
        r, c = divmod(i, per_row)
        x, y = c * entry_w + 4, r * (swatch + 6) + 4
        d.rectangle(
            [x, y, x + swatch - 1, y + swatch - 1], fill=tuple(int(v) for v in pal[i]), outline=(0, 0, 0)
        )
        d.text((x + swatch + 4, y - 1), name, fill=(0, 0, 0), font=font)
    return np.asarray(im)


def label_tile(text: str, width: int, *, height: int = 16, bg: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """A `height` x `width` strip with `text` (a column title)."""
    im = Image.new("RGB", (max(1, width), height), tuple(bg))
    ImageDraw.Draw(im).text((3, 1), text, fill=(0, 0, 0), font=_font())
    return np.asarray(im)


def resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    """Scale an HxWx3 uint8 image to `height` rows, keeping the aspect ratio (nearest when enlarging, so
    label borders stay crisp; area-like box filter when shrinking)."""
    a = _hw3(image).astype(np.uint8)
    h, w = a.shape[:2]
    if height <= 0:
        raise ValueError(f"height must be positive, got {height}")
    if h == height:
        return a
    width = max(1, round(w * height / h))
    resample = Image.Resampling.NEAREST if height > h else Image.Resampling.BOX
    return np.asarray(Image.fromarray(a).resize((width, height), resample))


def _fit(tile: np.ndarray, h: int, w: int, bg: Sequence[int]) -> np.ndarray:
    """Pad a tile (top-left aligned) to h x w."""
    t = _hw3(tile).astype(np.uint8)
    out = np.empty((h, w, 3), np.uint8)
    out[:] = np.asarray(bg, np.uint8)
    out[: t.shape[0], : t.shape[1]] = t[:h, :w]
    return out


def grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    *,
    titles: Sequence[str] | None = None,
    pad: int = 2,
    bg: Sequence[int] = (255, 255, 255),
    footer: np.ndarray | None = None,
) -> np.ndarray:
    """Tile images into one picture: `rows[i][j]` is the tile of row i, column j (None = empty cell).

    Every cell is as large as the largest tile of its row / column; `titles` (one per column) are written
    above the columns; `footer` (e.g. a `legend`) is appended below, left-aligned.
    """
    if not rows or not any(len(r) for r in rows):
        raise ValueError("grid needs at least one tile")
    ncols = max(len(r) for r in rows)
    if titles is not None and len(titles) != ncols:
        raise ValueError(f"{len(titles)} titles for {ncols} columns")
    tiles = [[None if t is None else _hw3(t) for t in list(r) + [None] * (ncols - len(r))] for r in rows]
    col_w = [max([t.shape[1] for t in col if t is not None] or [1]) for col in zip(*tiles)]
    row_h = [max([t.shape[0] for t in r if t is not None] or [1]) for r in tiles]
    lines = []
    if titles is not None:
        cells = [label_tile(str(s), w, bg=bg) for s, w in zip(titles, col_w)]
        lines.append(_hstack(cells, pad, bg))
    for r, h in zip(tiles, row_h):
        cells = [
            _fit(t if t is not None else np.zeros((0, 0, 3), np.uint8), h, w, bg) for t, w in zip(r, col_w)
        ]
        lines.append(_hstack(cells, pad, bg))
    if footer is not None:
        lines.append(_hw3(footer).astype(np.uint8))
    total_w = max(x.shape[1] for x in lines)
    lines = [_fit(x, x.shape[0], total_w, bg) for x in lines]
    return _vstack(lines, pad, bg)


def _hstack(cells: list[np.ndarray], pad: int, bg: Sequence[int]) -> np.ndarray:
    h = max(c.shape[0] for c in cells)
    sep = np.empty((h, pad, 3), np.uint8)
    sep[:] = np.asarray(bg, np.uint8)
    parts: list[np.ndarray] = []
    for i, c in enumerate(cells):
        if i:
            parts.append(sep)
        parts.append(c)
    return np.concatenate(parts, axis=1)


def _vstack(lines: list[np.ndarray], pad: int, bg: Sequence[int]) -> np.ndarray:
    w = lines[0].shape[1]
    sep = np.empty((pad, w, 3), np.uint8)
    sep[:] = np.asarray(bg, np.uint8)
    parts: list[np.ndarray] = []
    for i, x in enumerate(lines):
        if i:
            parts.append(sep)
        parts.append(x)
    return np.concatenate(parts, axis=0)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an HxWx3 uint8 RGB (or HxW uint8, e.g. a train-id map) array as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"save_png needs uint8 data, got {a.dtype}")
    Image.fromarray(a).save(path)
    return path

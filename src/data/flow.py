"""Optical flow: the one convention of the video UDA methods, its file format, resizing, flipping and warping.

Convention (video_uda.md §2.1, udass.md §2.4): a flow ``f`` stored for frame t w.r.t. an earlier frame s is a
**backward** flow on frame t's pixel grid, in pixels, pointing into frame s::

    I_t(p) ≈ I_s(p + f(p)),    channel 0 = x (u, horizontal), channel 1 = y (v, vertical).

So :func:`warp` moves a *previous-frame* map (image, logits, probabilities) onto the *current* frame's grid.
It is the reference's ``Resample2d`` (bilinear, indices clamped to the border), written as
``grid_sample(..., padding_mode="border", align_corners=True)`` with grid = 2·(pixel + f)/(size − 1) − 1.

File formats: :func:`read_flow` picks the reader by the file's extension, or as ``format`` says
(``data.flow.format``):

- ``int16_x10`` (``.npy``, DA-VSN / TPS / UDASS, video_uda.md §2.2): ``np.save`` of ``int16(trunc(f · 10))``,
  shape H×W×2, 0.1 px resolution and ±3276.7 px range; loaders divide by 10. :func:`write_flow` writes it.
- ``kitti_png`` (``.png``, UnifiedVideoDA's FlowFormer flows, video_uda.md §2.2): a 16-bit 3-channel PNG in
  the KITTI-2015 encoding, u = (R − 2^15)/64, v = (G − 2^15)/64, B = 1 where the flow is valid; read with
  OpenCV (BGR order), invalid pixels set to 0 (as UnifiedVideoDA's ``loadFlowVec``).
  :func:`write_flow_kitti_png` writes it.

Resizing (video_uda.md §2.3): a flow is resized bilinearly (align_corners=True) to the size of the map it
warps and its components are scaled with that map. The reference multiplies both u and v by the height
ratio (its maps keep the aspect ratio, so the two ratios agree); :func:`resize_flow` scales u by the width
ratio and v by the height ratio, which is the same there and correct elsewhere.

Horizontal flip: mirroring a frame pair mirrors the flow field *and* negates u (:func:`flip_flow`). The TPS
code mirrors the field only (TPS issue #9); ``negate_u=False`` reproduces that quirk.

Computing flow without weights (video_uda.md §6): :func:`compute_dis_flow` runs OpenCV's DIS optical flow as
``calc(gray_t, gray_s)``, which returns exactly this backward convention. The published flows come from
SDCNet/FlowNet2 (§2.1) and need weights and CUDA ops; DIS needs nothing and is cheap enough for the data
workers (``data.flow.source: dis``) or for ``scripts/compute_flow.py``. :func:`endpoint_error` measures a flow
against a reference (EPE, the mean Euclidean distance in pixels).

Forward–backward consistency (ours, beyond the references, which warp without any validity mask, video_uda.md
§2.3): :func:`flow_consistency` is the standard occlusion test (Sundaram et al. ECCV'10; UnFlow, Meister et
al. AAAI'18) of a backward flow t→s against the forward flow s→t: a pixel p of frame t is consistent iff

    |f_bw(p) + f̂_fw(p)|² < α (|f_bw(p)|² + |f̂_fw(p)|²) + β,   f̂_fw(p) = f_fw(p + f_bw(p))

(α = 0.01, β = 0.5 px²) and p + f_bw(p) lies inside frame s; occluded and out-of-frame points fail it.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FLOW_SCALE",
    "FLOW_FORMATS",
    "read_flow",
    "write_flow",
    "read_flow_kitti_png",
    "write_flow_kitti_png",
    "flow_consistency",
    "resize_flow",
    "flip_flow",
    "flow_grid",
    "warp",
    "DIS_PRESETS",
    "compute_dis_flow",
    "endpoint_error",
]

#: stored value = int16(flow · FLOW_SCALE) (video_uda.md §2.2)
FLOW_SCALE = 10.0
_INT16_LIMIT = 32767 / FLOW_SCALE
#: ``data.flow.format`` values: ``auto`` picks by the file's extension (.npy / .png)
FLOW_FORMATS = ("auto", "int16_x10", "kitti_png")
#: KITTI-2015 16-bit PNG flow encoding: value = flow · 64 + 2^15
KITTI_SCALE = 64.0
KITTI_OFFSET = 2.0**15


def flow_format_of(path: str | Path, format: str = "auto") -> str:
    """The format of a flow file: ``format`` unless ``auto``, else by extension (.npy / .png)."""
    if format not in FLOW_FORMATS:
        raise ValueError(f"data.flow.format must be one of {FLOW_FORMATS}, got {format!r}")
    if format != "auto":
        return format
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return "kitti_png"
    if suffix == ".npy":
        return "int16_x10"
    raise ValueError(
        f"flow file {path}: unknown extension {suffix!r} (.npy = int16 x 10, .png = KITTI 16-bit); set "
        f"data.flow.format=int16_x10 or kitti_png"
    )


def read_flow(path: str | Path, *, fix: str | None = None, format: str = "auto") -> np.ndarray:
    """Read a flow file as float32 H×W×2 pixels (channel 0 = x): an ``int16 × 10`` ``.npy`` or a KITTI
    16-bit ``.png`` (module docstring), by extension or as ``format`` says.

    ``fix``: what the error for a missing file tells the user to do (the dataset's compute_flow.py command).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"flow file {path} does not exist: "
            + (
                fix
                or "compute the flows with scripts/compute_flow.py, or set data.<split>.flow_dir to the "
                "folder holding the published *_int16_x10.npy files, or compute them on the fly with "
                "data.flow.source=dis"
            )
        )
    if flow_format_of(path, format) == "kitti_png":
        return read_flow_kitti_png(path)[0]
    return load_flow_npy(path, str(path))


def read_flow_kitti_png(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A KITTI-2015 16-bit PNG flow (UnifiedVideoDA's FlowFormer flows): (float32 H×W×2 px, bool H×W valid).

    u = (R − 2^15)/64, v = (G − 2^15)/64, valid = B > 0; invalid pixels get flow 0 (UnifiedVideoDA's
    ``loadFlowVec``). Read with OpenCV, whose channel order is BGR.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"flow file {path} does not exist")
    im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if im is None or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint16:
        what = "unreadable" if im is None else f"{im.dtype} with shape {im.shape}"
        raise ValueError(
            f"{path}: a KITTI flow PNG is 16-bit with 3 channels (u, v, valid), got {what}; set "
            f"data.flow.format=int16_x10 for .npy flows"
        )
    valid = im[..., 0] > 0
    flow = (im[..., [2, 1]].astype(np.float32) - KITTI_OFFSET) / KITTI_SCALE
    flow[~valid] = 0.0
    return np.ascontiguousarray(flow), valid


def write_flow_kitti_png(path: str | Path, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write an H×W×2 flow (pixels) as a KITTI-2015 16-bit PNG (1/64 px resolution, ±512 px range)."""
    import cv2

    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"write_flow_kitti_png({path}): expected HxWx2, got {flow.shape}")
    enc = np.clip(np.round(flow * KITTI_SCALE + KITTI_OFFSET), 0, 65535).astype(np.uint16)
    b = np.ones(flow.shape[:2], np.uint16) if valid is None else np.asarray(valid).astype(np.uint16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.stack([b, enc[..., 1], enc[..., 0]], -1)):  # BGR = (valid, v, u)
        raise OSError(f"could not write {path}")


def load_flow_npy(source: str | Path | BinaryIO, where: str) -> np.ndarray:
    """An ``int16 × 10`` ``.npy`` flow from a file or file object (``where`` names it in errors) as float32
    H×W×2 pixels: the checks and the scaling of :func:`read_flow`, shared with the packed chunks."""
    try:
        arr = np.load(source, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - one readable message
        raise ValueError(f"{where} is not a readable .npy flow file ({type(e).__name__}: {e})") from e
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"{where}: a flow must have shape HxWx2, got {arr.shape}")
    if arr.dtype != np.int16:
        raise ValueError(
            f"{where}: flows are stored as int16(flow*10) (video_uda.md §2.2), got dtype {arr.dtype}; "
            "rewrite it with src.data.flow.write_flow"
        )
    return arr.astype(np.float32) / FLOW_SCALE


def write_flow(path: str | Path, flow: np.ndarray | Tensor) -> None:
    """Write an H×W×2 (or 2×H×W tensor) flow as ``int16(trunc(flow · 10))``, clipped to int16."""
    if isinstance(flow, Tensor):
        flow = flow.detach().cpu().numpy()
        if flow.ndim == 3 and flow.shape[0] == 2 and flow.shape[-1] != 2:
            flow = flow.transpose(1, 2, 0)
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"write_flow({path}): expected HxWx2, got {flow.shape}")
    q = np.trunc(np.clip(flow, -_INT16_LIMIT, _INT16_LIMIT) * FLOW_SCALE).astype(np.int16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, q)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a (B, 2, H, W) or (2, H, W) flow to ``size`` = (h, w); u scaled by w/W, v by h/H."""
    squeeze = flow.dim() == 3
    f = flow.unsqueeze(0) if squeeze else flow
    H, W = f.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if (h, w) != (H, W):
        f = F.interpolate(f.float(), size=(h, w), mode="bilinear", align_corners=True)
        scale = torch.tensor([w / W, h / H], dtype=f.dtype, device=f.device).view(1, 2, 1, 1)
        f = f * scale
    return f.squeeze(0) if squeeze else f


def flip_flow(flow: Tensor, *, negate_u: bool = True) -> Tensor:
    """Mirror a (..., 2, H, W) flow horizontally; ``negate_u=False``: the TPS quirk (field only)."""
    f = flow.flip(-1)
    if negate_u:
        f = torch.cat([-f[..., :1, :, :], f[..., 1:, :, :]], dim=-3)
    return f


def flow_grid(flow: Tensor) -> Tensor:
    """``grid_sample`` grid (B, H, W, 2) in [-1, 1] (align_corners=True) sampling at p + f(p)."""
    B, _, H, W = flow.shape
    ys = torch.arange(H, dtype=flow.dtype, device=flow.device).view(1, H, 1)
    xs = torch.arange(W, dtype=flow.dtype, device=flow.device).view(1, 1, W)
    gx = (xs + flow[:, 0]) * (2.0 / max(W - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(H - 1, 1)) - 1.0
    return torch.stack([gx, gy], dim=-1)


def warp(src: Tensor, flow: Tensor, *, mode: str = "bilinear") -> Tensor:
    """Warp a previous-frame map ``src`` (B, C, h, w) onto the current frame with backward ``flow``.

    ``flow`` (B, 2, H, W) may be at any resolution: it is resized to (h, w) with :func:`resize_flow` first.
    Bilinear sampling with border clamping (the reference ``Resample2d``); ``mode="nearest"`` for label maps.
    Computed in float32 whatever the input dtype or autocast; returned in ``src``'s dtype.
    """
    if src.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(
            f"warp expects src (B,C,h,w) and flow (B,2,H,W), got {tuple(src.shape)}, {tuple(flow.shape)}"
        )
    # Always float32, autocast off: in bfloat16 the pixel coordinates of a 1024-wide map are off by up to
    # 4 px. The result comes back in src's dtype.
    with torch.autocast(device_type=src.device.type, enabled=False):
        grid = flow_grid(resize_flow(flow.float(), src.shape[-2:]))
        out = F.grid_sample(src.float(), grid, mode=mode, padding_mode="border", align_corners=True)
    return out.to(src.dtype)


def flow_consistency(
    flow_bw: Tensor, flow_fw: Tensor, *, alpha: float = 0.01, beta: float = 0.5, in_frame: bool = True
) -> Tensor:
    """(B, H, W) bool: where the backward flow t→s ``flow_bw`` (B,2,H,W, on t's grid) and the forward flow
    s→t ``flow_fw`` (B,2,H',W', on s's grid, resized to (H, W) first) pass the forward–backward test (module
    docstring); ``in_frame``: p + f_bw(p) must also lie inside frame s."""
    if flow_bw.dim() != 4 or flow_fw.dim() != 4 or flow_bw.shape[1] != 2 or flow_fw.shape[1] != 2:
        raise ValueError(
            f"flow_consistency expects (B,2,H,W) flows, got {tuple(flow_bw.shape)}, {tuple(flow_fw.shape)}"
        )
    bw = flow_bw.float()
    fw = warp(resize_flow(flow_fw.float(), bw.shape[-2:]), bw)  # f_fw at p + f_bw(p)
    lhs = (bw + fw).pow(2).sum(1)
    ok = lhs < alpha * (bw.pow(2).sum(1) + fw.pow(2).sum(1)) + beta
    if in_frame:
        h, w = bw.shape[-2:]
        ys = torch.arange(h, dtype=bw.dtype, device=bw.device).view(1, h, 1)
        xs = torch.arange(w, dtype=bw.dtype, device=bw.device).view(1, 1, w)
        px, py = xs + bw[:, 0], ys + bw[:, 1]
        ok &= (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    return ok


# --------------------------------------------------------------------------------------------------
# DIS optical flow (video_uda.md §6)
# --------------------------------------------------------------------------------------------------
#: ``preset`` names of :func:`compute_dis_flow` -> OpenCV constants (ULTRAFAST 0, FAST 1, MEDIUM 2)
DIS_PRESETS: dict[str, int] = {"ultrafast": 0, "fast": 1, "medium": 2}
_DIS_CACHE: dict[int, object] = {}


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"compute_dis_flow expects HxWx3 RGB or HxW grey frames, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def compute_dis_flow(
    frame_t: np.ndarray, frame_s: np.ndarray, preset: str = "medium", scale: float = 1.0
) -> np.ndarray:
    """Backward flow t -> s of two RGB (or grey) uint8 frames with OpenCV DIS: ``calc(gray_t, gray_s)``.

    Returns float32 h×w×2 pixels (channel 0 = x) with ``I_t(p) ≈ I_s(p + f(p))`` (video_uda.md §6
    "Convention match"). ``scale`` < 1 resizes both frames first (``INTER_AREA``) and returns the flow at that
    resolution, in its pixels, like the published flows (e.g. 0.5 of Cityscapes' 2048×1024, §2.1); bring it to
    any other size with :func:`resize_flow`. ``preset``: ultrafast | fast | medium (DIS_PRESETS).
    """
    import cv2

    key = str(preset).lower()
    if key not in DIS_PRESETS:
        raise ValueError(
            f"unknown DIS preset {preset!r} (data.flow.dis_preset); choose from {sorted(DIS_PRESETS)}"
        )
    if not 0 < float(scale) <= 4:
        raise ValueError(f"DIS scale must be in (0, 4], got {scale} (data.flow.dis_scale / --scale)")
    gt, gs = _gray(frame_t), _gray(frame_s)
    if gt.shape != gs.shape:
        raise ValueError(f"compute_dis_flow: frames differ in size, {gt.shape} vs {gs.shape}")
    if float(scale) != 1.0:
        h, w = gt.shape
        size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        gt, gs = cv2.resize(gt, size, interpolation=interp), cv2.resize(gs, size, interpolation=interp)
    dis = _DIS_CACHE.get(DIS_PRESETS[key])
    if dis is None:  # one DIS object per process and preset (data workers, compute_flow.py pool)
        dis = _DIS_CACHE[DIS_PRESETS[key]] = cv2.DISOpticalFlow_create(DIS_PRESETS[key])
    flow = dis.calc(gt, gs, None)
    return np.ascontiguousarray(flow, dtype=np.float32)


def endpoint_error(flow: np.ndarray | Tensor, reference: np.ndarray | Tensor, mask=None) -> float:
    """Mean end-point error ``‖flow − reference‖₂`` in pixels (H×W×2 arrays or (2,H,W) tensors), over
    ``mask`` (H×W bool) when given."""

    def hw2(x):
        if isinstance(x, Tensor):
            x = x.detach().cpu().numpy()
            if x.ndim == 3 and x.shape[0] == 2:
                x = x.transpose(1, 2, 0)
        return np.asarray(x, np.float64)

    a, b = hw2(flow), hw2(reference)
    if a.shape != b.shape:
        raise ValueError(f"endpoint_error: shapes differ, {a.shape} vs {b.shape}")
    err = np.sqrt(((a - b) ** 2).sum(-1))
    if mask is not None:
        m = np.asarray(mask, bool)
        if not m.any():
            raise ValueError("endpoint_error: the mask selects no pixel")
        err = err[m]
    return float(err.mean())

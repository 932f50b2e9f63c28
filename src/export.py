"""`python -m src.export ckpt_path=PATH format=onnx [network=teacher] [graph=test|single] [input_size=[h,w]]`

Exports the segmentor of a checkpoint (a training run's, or one of ``scripts/import_checkpoint.py``) as an
ONNX graph and checks it in the same command: onnxruntime and PyTorch on the same random batch, the max
abs logit difference printed, an error above ``check.tolerance`` (conf/export.yaml). README "Export (ONNX,
TensorRT)".

The graph: ``image`` (B, 3, H, W) float32, RGB normalised as at validation, ``(x - mean) / std`` with the
ImageNet mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375) on 0-255 values
(``src.data.transforms``) -> ``logits`` (B, C, H, W) at the input size; the argmax over C is the train-id map.
The batch axis is dynamic; H and W are fixed at ``input_size`` (the window boxes of the sliding inference are
Python numbers of the input size, so a graph holds them for one size).

* ``graph=test`` (default): what ``src.eval`` / ``src.predict`` compute on one ``input_size`` image,
  before the final resize to the original size: the checkpoint's ``eval.mode`` (whole, or the averaged
  sliding windows of ``eval.crop_size`` / ``eval.stride``), each window through the model's ``predict``. For
  the HRDA host that is the published test protocol (daformer_mic.md §3): per 1024 window the context view
  at 0.5 and the overlapping 512 detail windows (stride 256), fused with the scale attention; on Cityscapes
  ``input_size=[1024,2048]`` with the experiment's 1024 / 512 outer windows. The graph to deploy when the
  numbers of ``src.eval`` must hold.
* ``graph=single``: one network pass over the input, no sliding window at all. DAFormer host: the segmentor
  itself (identical to ``test`` when ``eval.mode=whole``). HRDA host: the fused single-window network, the
  context view at ``lr_scale`` plus *one* detail pass over the whole input (``hr_slide_inference=false``),
  fused by the attention: 2 encoder passes instead of 3 x (1 + 9) at 1024 x 2048, but not the protocol the
  published numbers were measured with (the detail branch sees the whole input at once instead of the 512
  crops it was trained on).

Exporters: ``exporter=dynamo`` (``torch.export`` + onnxscript, torch's default) or ``torchscript`` (the
older tracer: a few times faster to export). Two-frame (video) checkpoints are not exported. A user error
ends in one line ``error: ...`` (src/utils/cli.py).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

import src.utils.config  # noqa: F401
from src.data.transforms import MEAN, STD
from src.models.inference import slide_inference
from src.uda.video.module import load_module
from src.utils.cli import readable_errors

log = logging.getLogger(__name__)

GRAPHS = ("test", "single")
EXPORTERS = ("dynamo", "torchscript")
_EXAMPLE_BATCH = 2  # the traced batch; dynamo specialises a batch of 1, so the example has 2


class ExportGraph(nn.Module):
    """(B, 3, H, W) normalised image -> (B, C, H, W) logits: ``predict`` whole or in sliding windows."""

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        mode: str = "whole",
        crop_size: tuple[int, int] | None = None,
        stride: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("whole", "slide"):
            raise ValueError(f"eval.mode must be 'whole' or 'slide', got {mode!r}")
        if mode == "slide" and (not crop_size or not stride):
            raise ValueError("eval.mode=slide needs eval.crop_size=[h,w] and eval.stride=[h,w]")
        self.model = model
        self.num_classes = int(num_classes)
        self.mode = mode
        self.crop_size = tuple(int(v) for v in crop_size) if crop_size else None
        self.stride = tuple(int(v) for v in stride) if stride else None

    def forward(self, image: Tensor) -> Tensor:
        if self.mode == "slide":
            return slide_inference(self.model, image, num_classes=self.num_classes, crop_size=self.crop_size,
                                   stride=self.stride, batched=True)  # fmt: skip
        return self.model.predict(image)


def build_graph(module, *, network: str = "student", graph: str = "test", eval_overrides: dict | None = None):
    """The :class:`ExportGraph` of a loaded module (eval mode, on its device) and a one-line description."""
    if network not in ("student", "teacher"):
        raise ValueError(f"network must be 'student' or 'teacher', got {network!r}")
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
    if network == "teacher" and module.teacher is None:
        raise ValueError(f"network=teacher but the {module.method} checkpoint has no EMA teacher")
    model = module.student if network == "student" else module.teacher.model
    if hasattr(model, "forward_clip"):
        raise ValueError(
            "two-frame (video) checkpoints are not exported: their inference needs frame t-1 and the optical "
            "flow (src.predict computes it with OpenCV DIS); export a single-frame checkpoint"
        )
    model = copy.deepcopy(model).eval()
    e = dict(module.eval_cfg)
    e.update({k: v for k, v in (eval_overrides or {}).items() if v is not None})
    hrda = hasattr(model, "hr_slide_inference")
    if graph == "single":
        if hrda:
            model.hr_slide_inference = False
        desc = "one network pass" + (" (HRDA: context + one detail pass, fused)" if hrda else "")
        return ExportGraph(model, num_classes=module.num_classes).eval(), desc
    mode = e.get("mode") or "whole"
    out = ExportGraph(model, num_classes=module.num_classes, mode=mode, crop_size=e.get("crop_size"),
                      stride=e.get("stride")).eval()  # fmt: skip
    desc = "whole image" if mode == "whole" else f"sliding windows {out.crop_size} stride {out.stride}"
    if hrda and model.hr_slide_inference:
        desc += f"; HRDA detail windows {list(model.hr_crop_size)} stride {list(model.hr_slide_stride)}"
    return out, desc


def default_input_size(cfg: dict) -> tuple[int, int]:
    """(h, w) from the checkpoint's ``data.val_scale`` [long, short] (landscape images), else an error."""
    scale = (cfg.get("data") or {}).get("val_scale")
    if not scale:
        raise ValueError(
            "input_size is required: the checkpoint's data.val_scale is null (full-resolution validation); "
            "pass input_size=[h,w], e.g. input_size=[1024,2048] for Cityscapes"
        )
    long, short = (int(v) for v in scale)
    return short, long


def export_onnx(graph: nn.Module, path: Path, *, input_size: tuple[int, int], exporter: str = "dynamo",
                opset: int = 18, device: torch.device | str = "cpu") -> Path:  # fmt: skip
    """Write ``graph`` as ONNX (input ``image``, output ``logits``, dynamic batch axis ``batch``)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.randn(_EXAMPLE_BATCH, 3, *input_size, device=device)
    kw: dict[str, Any] = dict(input_names=["image"], output_names=["logits"], opset_version=int(opset))
    if exporter == "dynamo":
        kw |= dict(dynamo=True, external_data=False, verbose=False,
                   dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=1024)}})  # fmt: skip
    else:
        kw |= dict(dynamo=False, dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python numbers of the fixed input size
        torch.onnx.export(graph, (x,), str(path), **kw)
    return path


def add_metadata(path: Path, meta: dict[str, str]) -> None:
    """Store ``meta`` in the ONNX file's metadata_props (classes, normalisation, graph kind)."""
    import onnx

    model = onnx.load(str(path))
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))


def check_onnx(path: Path, graph: nn.Module, *, input_size: tuple[int, int], batch: int = 1, seed: int = 0,
               device: torch.device | str = "cpu") -> tuple[float, float]:  # fmt: skip
    """(max abs logit difference, argmax agreement) of onnxruntime against PyTorch on a random batch."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError("the onnxruntime check needs onnxruntime: pip install -e '.[export]'") from None
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn(int(batch), 3, *input_size, generator=g)
    with torch.no_grad():
        ref = graph(x.to(device)).float().cpu()
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    session = ort.InferenceSession(str(path), providers=providers)
    try:
        out = torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
    except Exception as e:  # noqa: BLE001 - onnxruntime's multi-line messages -> one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"onnxruntime cannot run {path} on a batch of {batch}: {first}") from e
    if out.shape != ref.shape:
        raise ValueError(f"{path}: onnxruntime gave logits {tuple(out.shape)}, PyTorch {tuple(ref.shape)}")
    diff = float((out - ref).abs().max())
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    return diff, agree


def export(cfg: DictConfig) -> dict[str, Any]:
    """Run the export of ``cfg`` (conf/export.yaml); returns {'output', 'max_abs_diff', ...}."""
    fmt = str(cfg.get("format", "onnx")).lower()
    if fmt != "onnx":
        raise ValueError(
            f"format={fmt}: only onnx is written here; build a TensorRT engine from the ONNX file with "
            "trtexec (README, 'Export (ONNX, TensorRT)')"
        )
    exporter = str(cfg.get("exporter", "dynamo"))
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    name = str(cfg.get("device") or "cpu")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device} but no CUDA device is available; use device=cpu")
    module = load_module(cfg.ckpt_path)
    overrides = OmegaConf.to_container(cfg.eval, resolve=True) if cfg.get("eval") else {}
    network, kind = str(cfg.get("network", "student")), str(cfg.get("graph", "test"))
    graph, desc = build_graph(module, network=network, graph=kind, eval_overrides=overrides)
    graph.to(device)
    size = cfg.get("input_size")
    input_size = tuple(int(v) for v in size) if size else default_input_size(module.cfg)
    if len(input_size) != 2 or min(input_size) <= 0:
        raise ValueError(f"input_size must be [h, w] with positive sides, got {list(input_size)}")
    h, w = input_size
    name = f"{Path(cfg.ckpt_path).stem}_{network}_{kind}_{h}x{w}.onnx"
    out = Path(str(cfg.get("output") or Path(cfg.paths.output_dir) / name)).expanduser()
    t0 = time.perf_counter()
    opset = int(cfg.get("opset", 18))
    export_onnx(graph, out, input_size=input_size, exporter=exporter, opset=opset, device=device)
    seconds = time.perf_counter() - t0
    add_metadata(out, {
        "source_checkpoint": str(cfg.ckpt_path), "network": network, "graph": f"{kind}: {desc}",
        "input": f"image (batch, 3, {h}, {w}) float32 RGB, (x - mean) / std on 0-255",
        "mean": ",".join(map(str, MEAN)), "std": ",".join(map(str, STD)),
        "output": f"logits (batch, {module.num_classes}, {h}, {w}); argmax = train id",
        "classes": ",".join(module.class_names),
    })  # fmt: skip
    result: dict[str, Any] = {"output": str(out), "graph": desc, "input_size": [h, w], "seconds": seconds}
    print(f"exported {network} ({kind}: {desc}) at {h}x{w}, dynamic batch, with {exporter} in "
          f"{seconds:.1f} s -> {out}")  # fmt: skip
    check = cfg.get("check") or {}
    batch = int(check.get("batch", 1))
    if batch > 0:
        tol = float(check.get("tolerance", 1e-3))
        seed = int(check.get("seed", 0))
        diff, agree = check_onnx(out, graph, input_size=input_size, batch=batch, seed=seed, device=device)
        result |= {"max_abs_diff": diff, "argmax_agreement": agree, "tolerance": tol}
        print(f"onnxruntime vs PyTorch, batch {batch}: max abs logit difference {diff:.3g} (tolerance "
              f"{tol:g}), argmax agreement {100 * agree:.2f} %")  # fmt: skip
        if not diff <= tol:
            raise ValueError(
                f"{out}: onnxruntime's logits differ from PyTorch's by {diff:.3g} > check.tolerance={tol:g}: "
                "try exporter=torchscript or another opset, or raise check.tolerance if that is expected"
            )
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@readable_errors  # missing checkpoint, bad option, failed check -> one line on stderr (src/utils/cli.py)
def main(cfg: DictConfig) -> float | None:
    return export(cfg).get("max_abs_diff")


if __name__ == "__main__":
    main()

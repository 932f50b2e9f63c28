"""`python -m src.export` (src/export.py, issue 19): tiny DAFormer and HRDA checkpoints exported to ONNX with
a dynamic batch axis; onnxruntime's logits against the inference `src.eval` runs (`UDAModule.infer`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf

from src.export import export
from src.uda.module import UDAModule, load_module

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _ckpt(path: Path, *overrides: str) -> Path:
    cfg = compose_cfg("train", ["paths.output_dir=/tmp/x", "model.head_channels=16", "uda=dacs", *overrides])
    cfg = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    module = UDAModule(cfg)
    with torch.no_grad():  # a non-trivial teacher, and BN statistics that are not the defaults
        for p in module.teacher.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        for name, b in module.student.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"cfg": cfg}}, path)
    return path


HRDA = [
    "model=hrda_daformer_mitb0",
    "model.hrda.hr_crop_size=[32,32]",  # 9 detail windows of 32 (stride 16) in a 64 x 64 outer window
    "eval.mode=slide",
    "eval.crop_size=[64,64]",
    "eval.stride=[32,32]",
]


def _run(ckpt: Path, out: Path, *overrides: str) -> dict:
    cfg = compose_cfg("export", [f"ckpt_path={ckpt}", f"output={out}", f"paths.output_dir={out.parent}",
                                 "input_size=[64,128]", "check.batch=3", *overrides])  # fmt: skip
    return export(cfg)


def _ort_vs_eval(onnx_path: Path, ckpt: Path, network: str = "student") -> float:
    """onnxruntime on a fresh batch of 2 against the module's own validation inference."""
    module = load_module(ckpt)
    model = module.student if network == "student" else module.teacher.model
    x = torch.randn(2, 3, 64, 128, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = module.infer(model, x, None)
    out = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()}
    )
    return float((torch.from_numpy(out[0]) - ref).abs().max())


@pytest.mark.parametrize(
    ("name", "overrides", "network"),
    [("daformer", [], "student"), ("hrda", HRDA, "teacher")],
    ids=["daformer", "hrda_slide_teacher"],
)
def test_onnx_export_matches_pytorch(tmp_path, capsys, name, overrides, network) -> None:
    ckpt = _ckpt(tmp_path / f"{name}.ckpt", *overrides)
    out = tmp_path / f"{name}.onnx"
    res = _run(ckpt, out, "exporter=torchscript", f"network={network}")
    printed = capsys.readouterr().out
    assert "max abs logit difference" in printed and "dynamic batch" in printed
    assert res["max_abs_diff"] <= 1e-4 and res["argmax_agreement"] == 1.0
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 128]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["network"] == network and meta["mean"] == "123.675,116.28,103.53"
    assert len(meta["classes"].split(",")) == 19
    if name == "hrda":
        assert (
            "sliding windows (64, 64) stride (32, 32); HRDA detail windows [32, 32] stride [16, 16]"
            in res["graph"]
        )
    assert _ort_vs_eval(out, ckpt, network) <= 1e-4  # the graph is src.eval's inference


def test_hrda_single_window_graph(tmp_path) -> None:
    """graph=single: the fused network with one detail pass (no windows), checked the same way."""
    ckpt = _ckpt(tmp_path / "hrda.ckpt", *HRDA)
    res = _run(ckpt, tmp_path / "single.onnx", "exporter=torchscript", "graph=single")
    assert res["graph"] == "one network pass (HRDA: context + one detail pass, fused)"
    assert res["max_abs_diff"] <= 1e-4
    module = load_module(ckpt)
    module.student.hr_slide_inference = False
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        ref = module.student.predict(x)
    out = ort.InferenceSession(str(tmp_path / "single.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()}
    )
    assert float((torch.from_numpy(out[0]) - ref).abs().max()) <= 1e-4


def test_dynamo_exporter(tmp_path) -> None:
    """torch's default exporter (torch.export + onnxscript) on the DAFormer host."""
    ckpt = _ckpt(tmp_path / "d.ckpt")
    res = _run(ckpt, tmp_path / "d.onnx", "exporter=dynamo")
    assert res["max_abs_diff"] <= 1e-4 and res["argmax_agreement"] == 1.0
    assert _ort_vs_eval(tmp_path / "d.onnx", ckpt) <= 1e-4


@pytest.mark.slow
def test_dynamo_exporter_hrda_slide(tmp_path) -> None:
    ckpt = _ckpt(tmp_path / "h.ckpt", *HRDA)
    res = _run(ckpt, tmp_path / "h.onnx", "exporter=dynamo")
    assert res["max_abs_diff"] <= 1e-4
    assert _ort_vs_eval(tmp_path / "h.onnx", ckpt) <= 1e-4


def test_export_errors_are_one_line(tmp_path) -> None:
    ckpt = _ckpt(tmp_path / "d.ckpt")
    with pytest.raises(ValueError, match=r"format=tensorrt: .*trtexec"):
        _run(ckpt, tmp_path / "x.onnx", "format=tensorrt")
    with pytest.raises(ValueError, match=r"differ from PyTorch's by .* > check\.tolerance=-1"):
        _run(ckpt, tmp_path / "x.onnx", "exporter=torchscript", "check.tolerance=-1")
    cfg = compose_cfg("export", [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path}", "check.batch=0"])
    with pytest.raises(ValueError, match=r"input_size is required: .*val_scale is null"):
        export(cfg)  # the synthetic data validates at full resolution
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _run(tmp_path / "nope.ckpt", tmp_path / "x.onnx")

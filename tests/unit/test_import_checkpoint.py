"""Released DAFormer / HRDA / MIC checkpoints in (src/models/released.py, scripts/import_checkpoint.py) and
`model.init_from=` (src/uda/init_from.py); issue 19.

The released files are built here in their exact layout, written out by hand from the reference code (not
from our map): an mmcv checkpoint {"meta", "state_dict", "optimizer"} whose state_dict holds `model.*`,
`ema_model.*` and `imnet_model.*` mmseg segmentors. Backbone keys: SegFormer's `mit_b*.pth` names (our MiT's,
checked against the original layout in test_models.py). Head keys (DAFormer `daformer_head.py`: `embed_layers`
a ModuleDict of `MLP.proj` Linear layers, `fuse_layer` an `ASPPWrapper` whose `aspp_modules` are a 1x1
`ConvModule` then mmcv `DepthwiseSeparableConvModule`s, `bottleneck` a 3x3 ConvModule; `conv_seg`; ConvModules
with BN have no conv bias) and HRDA (`hrda_head.py`: the DAFormer head as `decode_head.head`, the scale
attention as `decode_head.scale_attention` with a 1x1 ConvModule `fuse_layer`; its own conv_seg deleted).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import TINY_SYNTHETIC, compose_cfg

from src.models.backbones import mix_transformer
from src.models.factory import create_segmentor
from src.models.released import describe_segmentor, split_uda_state, to_our_segmentor
from src.uda.init_from import init_from, read_segmentor_weights
from src.uda.module import load_module

ROOT = Path(__file__).resolve().parents[2]
B5 = ("mit_b5", (64, 128, 320, 512), 256)
TINY = ("mit_b0", (32, 64, 160, 256), 16)


def _script():
    spec = importlib.util.spec_from_file_location(
        "import_checkpoint", ROOT / "scripts" / "import_checkpoint.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _conv_bn(sd: dict, prefix: str, c_in: int, c_out: int, k: int, *, groups: int = 1) -> None:
    """mmcv ConvModule(norm_cfg=BN): conv without bias, then bn with its buffers."""
    sd[f"{prefix}.conv.weight"] = torch.randn(c_out, c_in // groups, k, k) * 0.05
    sd[f"{prefix}.bn.weight"] = torch.rand(c_out) + 0.5
    sd[f"{prefix}.bn.bias"] = torch.randn(c_out) * 0.1
    sd[f"{prefix}.bn.running_mean"] = torch.randn(c_out) * 0.1
    sd[f"{prefix}.bn.running_var"] = torch.rand(c_out) + 0.5
    sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(40000)


def mmseg_daformer_head(prefix: str, in_channels, width: int, classes: int, *, aspp: bool = True) -> dict:
    """A DAFormerHead state dict (sepaspp: dilations 1, 6, 12, 18; or HRDA's attention, 1x1 conv fusion)."""
    sd: dict[str, torch.Tensor] = {}
    for i, c in enumerate(in_channels):
        sd[f"{prefix}embed_layers.{i}.proj.weight"] = torch.randn(width, c) * 0.05
        sd[f"{prefix}embed_layers.{i}.proj.bias"] = torch.randn(width) * 0.01
    cat = width * len(in_channels)
    if aspp:
        _conv_bn(sd, f"{prefix}fuse_layer.aspp_modules.0", cat, width, 1)
        for j in (1, 2, 3):
            _conv_bn(sd, f"{prefix}fuse_layer.aspp_modules.{j}.depthwise_conv", cat, cat, 3, groups=cat)
            _conv_bn(sd, f"{prefix}fuse_layer.aspp_modules.{j}.pointwise_conv", cat, width, 1)
        _conv_bn(sd, f"{prefix}fuse_layer.bottleneck", 4 * width, width, 3)
    else:
        _conv_bn(sd, f"{prefix}fuse_layer", cat, width, 1)
    sd[f"{prefix}conv_seg.weight"] = torch.randn(classes, width, 1, 1) * 0.05
    sd[f"{prefix}conv_seg.bias"] = torch.randn(classes) * 0.01
    return sd


def mmseg_segmentor(variant, *, hrda: bool, seed: int, classes: int = 19) -> dict:
    """One mmseg EncoderDecoder / HRDAEncoderDecoder state dict."""
    name, widths, head = variant
    torch.manual_seed(seed)
    sd = {f"backbone.{k}": v.clone() for k, v in getattr(mix_transformer, name)().state_dict().items()}
    if hrda:
        sd |= mmseg_daformer_head("decode_head.head.", widths, head, classes)
        sd |= mmseg_daformer_head("decode_head.scale_attention.", widths, head, classes, aspp=False)
    else:
        sd |= mmseg_daformer_head("decode_head.", widths, head, classes)
    return sd


def released_file(
    path: Path, variant, *, hrda: bool, ema: bool = True, imnet: bool = True, extra=None
) -> dict:
    """A released UDA checkpoint: {"meta", "state_dict": model.* [ema_model.* imnet_model.*], "optimizer"}."""
    parts = {"model": mmseg_segmentor(variant, hrda=hrda, seed=1)}
    if ema:
        parts["ema_model"] = mmseg_segmentor(variant, hrda=hrda, seed=2)
    if imnet:
        parts["imnet_model"] = mmseg_segmentor(variant, hrda=hrda, seed=3)
    state = {f"{p}.{k}": v for p, sd in parts.items() for k, v in sd.items()} | dict(extra or {})
    meta = {"mmcv_version": "1.3.7", "config": "...", "CLASSES": ["road"] * 19, "iter": 40000}
    torch.save({"meta": meta, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return parts


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:3]


# ----------------------------------------------------------------------------------------- the key map
@pytest.mark.parametrize("hrda", [False, True], ids=["daformer", "hrda"])
def test_b5_release_layout_maps_to_our_segmentor(hrda) -> None:
    """The real MiT-B5 / 256-channel key names and shapes map one to one onto our segmentor (no forward)."""
    theirs = mmseg_segmentor(B5, hrda=hrda, seed=0)
    ours, unknown = to_our_segmentor(theirs)
    assert unknown == []
    model = create_segmentor(name="hrda_daformer_mitb5" if hrda else "daformer_mitb5")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected
    model.load_state_dict(ours, strict=True)
    head = "decode_head.head." if hrda else "decode_head."
    dw = theirs[f"{head}fuse_layer.aspp_modules.2.depthwise_conv.conv.weight"]
    assert torch.equal(model.head.fuse_layer.aspp_modules[2].depthwise_conv.conv.weight, dw)
    if hrda:
        assert torch.equal(model.attention_head.fuse_layer.conv.weight,
                           theirs["decode_head.scale_attention.fuse_layer.conv.weight"])  # fmt: skip
    info = describe_segmentor(ours, where="x")
    assert (info.host, info.mit, info.head_channels, info.num_classes) == (
        "hrda" if hrda else "daformer", "mitb5", 256, 19)  # fmt: skip
    assert info.model_name == ("hrda_daformer_mitb5" if hrda else "daformer_mitb5")


def test_split_student_ema_imnet_and_ignored(tmp_path) -> None:
    extra = {"mic.teacher.ema_model.backbone.norm1.weight": torch.ones(32)}
    parts = released_file(tmp_path / "r.pth", TINY, hrda=True, extra=extra)
    state = torch.load(tmp_path / "r.pth", weights_only=True)["state_dict"]
    split, ignored = split_uda_state(state)
    assert set(split) == {"model", "ema_model", "imnet_model"}
    assert ignored == ["mic.teacher.ema_model.backbone.norm1.weight"]
    w = read_segmentor_weights(tmp_path / "r.pth")
    assert w.layout == "mmseg"
    _same_tensors(w.student, to_our_segmentor(parts["model"])[0])
    _same_tensors(w.teacher, to_our_segmentor(parts["ema_model"])[0])
    imnet_backbone = {
        k[len("backbone.") :]: v for k, v in parts["imnet_model"].items() if k.startswith("backbone.")
    }
    _same_tensors(w.fd_encoder, imnet_backbone)
    assert "mic.teacher.ema_model.backbone.norm1.weight" in w.ignored
    assert any(k.startswith("imnet_model.decode_head.") for k in w.ignored)  # only its backbone is used


# ----------------------------------------------------------------------------------------- the script
def _overrides(data_dir) -> list[str]:
    """Evaluate the imported tiny model on the tiny synthetic data of the tests."""
    return ["data=synthetic", f"paths.data_dir={data_dir}", *TINY_SYNTHETIC]


def test_import_daformer_release_evaluates_predicts(tmp_path, data_dir, capsys) -> None:
    parts = released_file(tmp_path / "daformer.pth", TINY, hrda=False)
    out = tmp_path / "imported" / "daformer_gta.ckpt"
    rc = _script().main([str(tmp_path / "daformer.pth"), "--method", "daformer", "--data", "gta",
                         "--out", str(out), *_overrides(data_dir)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "experiment=daformer_gta model=daformer_mitb0" in capsys.readouterr().out
    ckpt = torch.load(out, weights_only=True)
    cfg = ckpt["hyper_parameters"]["cfg"]
    assert cfg["uda"]["name"] == "daformer" and cfg["model"]["name"] == "daformer_mitb0"
    assert cfg["model"]["head_channels"] == 16 and cfg["uda"]["fd"]["_target_"].endswith(
        "ImageNetFeatureDistance"
    )
    assert (
        ckpt["imported_from"]["teacher"] == "ema_model"
        and ckpt["imported_from"]["fd_encoder"] == "imnet_model"
    )
    module = load_module(out)
    sd = module.state_dict()
    for prefix, part in (("student.", "model"), ("teacher.model.", "ema_model")):
        ours = to_our_segmentor(parts[part])[0]
        _same_tensors({k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}, ours)
    assert torch.equal(
        sd["fd.encoder.block2.1.attn.kv.weight"], parts["imnet_model"]["backbone.block2.1.attn.kv.weight"]
    )

    from src.eval import evaluate

    ecfg = compose_cfg("eval", [f"ckpt_path={out}", f"paths.output_dir={tmp_path / 'eval'}",
                                "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"])  # fmt: skip
    res = evaluate(ecfg)
    assert 0.0 <= res["mIoU"] <= 100.0 and res["method"] == "daformer" and "teacher_mIoU" in res

    from src.predict import predict

    img = sorted((data_dir / "synthetic" / "val" / "images").iterdir())[0]
    pcfg = compose_cfg("predict", [f"ckpt_path={out}", f"input={img}", f"output={tmp_path / 'pred'}",
                                   "network=teacher", "device=cpu", "progress=false"])  # fmt: skip
    predict(pcfg)
    assert (tmp_path / "pred" / "train_ids" / f"{img.stem}.png").is_file()


def test_import_hrda_and_mic_without_ema_or_imnet(tmp_path, data_dir, capsys) -> None:
    script = _script()
    released_file(tmp_path / "hrda.pth", TINY, hrda=True, ema=False, imnet=False)
    # the host is read from the file: an HRDA file is no --method daformer
    rc = script.main([str(tmp_path / "hrda.pth"), "--method", "daformer", "--data", "gta", "--out",
                      str(tmp_path / "x.ckpt")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert (
        "holds an HRDA model (decode_head.scale_attention.*)" in err
        and "--method hrda or --method mic" in err
    )
    out = tmp_path / "mic.ckpt"
    tiny_hrda = ["model.hrda.hr_crop_size=[32,32]", "eval.mode=whole"]
    rc = script.main([str(tmp_path / "hrda.pth"), "--method", "mic", "--data", "synthia", "--out", str(out),
                      *_overrides(data_dir), *tiny_hrda])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    ckpt = torch.load(out, weights_only=True)
    cfg = ckpt["hyper_parameters"]["cfg"]
    assert cfg["uda"]["name"] == "mic" and cfg["model"]["name"] == "hrda_daformer_mitb0"
    assert cfg["uda"]["fd"] is None or not cfg["uda"]["fd"].get("_target_")  # no imnet_model: uda/fd=none
    assert ckpt["imported_from"]["teacher"].startswith("copy of the student")
    module = load_module(out)
    sd = module.state_dict()
    assert not any(k.startswith("fd.") for k in sd)
    assert torch.equal(
        sd["teacher.model.attention_head.conv_seg.weight"], sd["student.attention_head.conv_seg.weight"]
    )

    from src.eval import evaluate

    ecfg = compose_cfg("eval", [f"ckpt_path={out}", f"paths.output_dir={tmp_path / 'eval'}",
                                "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"])  # fmt: skip
    assert 0.0 <= evaluate(ecfg)["mIoU"] <= 100.0


# ----------------------------------------------------------------------------------------- model.init_from
@pytest.mark.parametrize("source", ["released", "imported"])
def test_init_from_loads_student_teacher_and_imagenet_encoder(tmp_path, data_dir, source) -> None:
    parts = released_file(tmp_path / "r.pth", TINY, hrda=False)
    path = tmp_path / "r.pth"
    if source == "imported":
        path = tmp_path / "imported.ckpt"
        assert _script().main([str(tmp_path / "r.pth"), "--method", "daformer", "--data", "gta", "--out",
                               str(path), *_overrides(data_dir)]) == 0  # fmt: skip
    from omegaconf import OmegaConf

    from src.uda.module import UDAModule

    cfg = compose_cfg("train", ["paths.output_dir=/tmp/x", "uda=daformer", "model.head_channels=16",
                                f"model.init_from={path}"])  # fmt: skip
    module = UDAModule(OmegaConf.to_container(cfg, resolve=True))  # init_from is not a segmentor argument
    init_from(module, cfg.model.init_from)
    student = to_our_segmentor(parts["model"])[0]
    teacher = to_our_segmentor(parts["ema_model"])[0]
    _same_tensors(module.student.state_dict(), student)
    _same_tensors(module.teacher.model.state_dict(), teacher)
    assert torch.equal(module.fd.encoder.norm4.weight, parts["imnet_model"]["backbone.norm4.weight"])
    # the loaded teacher is kept: EMA at alpha from step 0 (no copy of the student)
    assert module.teacher.warm_start
    alpha = module.teacher.update(module.student, 0)
    w = "head.conv_seg.weight"
    assert alpha == 0.999
    assert torch.allclose(module.teacher.model.state_dict()[w], 0.999 * teacher[w] + 0.001 * student[w])


def test_init_from_trains_and_errors_are_one_line(tmp_path, train_cfg) -> None:
    released_file(tmp_path / "r.pth", TINY, hrda=False)
    from src.train import train

    cfg = train_cfg("uda=daformer", f"model.init_from={tmp_path / 'r.pth'}", "trainer.max_steps=1",
                    "trainer.val_check_interval=1")  # fmt: skip
    assert 0.0 <= train(cfg)["mIoU"] <= 100.0
    from omegaconf import OmegaConf

    from src.uda.module import UDAModule

    wider = compose_cfg("train", ["paths.output_dir=/tmp/x", "model.head_channels=32"])
    module = UDAModule(OmegaConf.to_container(wider, resolve=True))
    with pytest.raises(
        ValueError, match=r"its student does not fit the model of this run .*another shape"
    ) as e:
        init_from(module, tmp_path / "r.pth")
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"model\.init_from=.*nope\.pth: .*does not exist"):
        init_from(module, tmp_path / "nope.pth")
    torch.save({"state_dict": {"foo.weight": torch.zeros(1)}}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match=r"holds neither a checkpoint of this library"):
        init_from(module, tmp_path / "foreign.pth")

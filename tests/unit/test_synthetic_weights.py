"""The offline ImageNet stand-in (src/models/synthetic_weights, issue 15): tiny settings only; the full
pre-training never runs in the test suite."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from src.models.backbones.mix_transformer import mit_b0
from src.models.synthetic_weights import pretrain as P
from src.models.synthetic_weights.pretext import SHAPES, TEXTURES, render_batch
from tests.conftest import FAST_TRAINER, compose_cfg

TINY = {"steps": 3, "batch_size": 4, "size": 32}


def test_the_pretext_stream_is_deterministic_by_seed_and_index():
    a, b = render_batch(0, 5, 6, 32), render_batch(0, 5, 6, 32)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = render_batch(1, 5, 6, 32)
    assert not np.array_equal(a[0], c[0])
    x, shape, tex = a
    assert x.shape == (6, 3, 32, 32) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert shape.max() <= len(SHAPES) and tex.max() < len(TEXTURES)
    assert len(np.unique(shape)) > 2  # background and several objects


def test_the_cached_file_has_segformer_keys_and_loads_into_mit_b0_without_missing_keys(tmp_path):
    path = P.ensure_synthetic_weights("mit_b0", tmp_path, **TINY)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert (
        "patch_embed1.proj.weight" in state and "block4.1.attn.kv.weight" in state and "norm4.bias" in state
    )
    missing, unexpected = mit_b0().load_state_dict(state, strict=False)
    assert not missing and not unexpected
    manifest = json.loads((tmp_path / "synthetic_mit_b0.json").read_text())
    assert manifest["params"]["steps"] == 3 and manifest["version"] == P.PRETEXT_VERSION
    # cached: a second call returns the file without training again
    mtime = path.stat().st_mtime_ns
    assert P.ensure_synthetic_weights("mit_b0", tmp_path, **TINY) == path and path.stat().st_mtime_ns == mtime
    # other settings re-make it
    P.ensure_synthetic_weights("mit_b0", tmp_path, **{**TINY, "seed": 1})
    assert json.loads((tmp_path / "synthetic_mit_b0.json").read_text())["params"]["seed"] == 1


def test_same_seed_same_weights(tmp_path):
    torch.set_num_threads(1)
    a, _ = P.pretrain("mit_b0", progress=False, **TINY)
    b, _ = P.pretrain("mit_b0", progress=False, **TINY)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_pretrained_synthetic_through_the_factory(tmp_path, monkeypatch):
    from src.models.factory import create_segmentor

    monkeypatch.setattr(P, "DEFAULTS", {**P.DEFAULTS, **TINY})
    seg = create_segmentor(name="daformer_mitb0", num_classes=7, pretrained="synthetic", head_channels=16,
                           pretrained_dir=str(tmp_path))  # fmt: skip
    state = torch.load(tmp_path / "synthetic_mit_b0.pth", map_location="cpu", weights_only=True)
    assert torch.equal(seg.backbone.patch_embed1.proj.weight, state["patch_embed1.proj.weight"])
    with pytest.raises(ValueError, match="MiT encoders only"):
        create_segmentor(name="deeplabv2_r50", pretrained="synthetic", pretrained_dir=str(tmp_path))


def test_folder_data_with_the_stand_in_and_fd_warning(train_cfg, tmp_path, monkeypatch, caplog):
    """`model.pretrained=synthetic` on a folder dataset the project never saw; FD without weights warns."""
    import cv2
    from omegaconf import OmegaConf

    from src.uda.video.module import build_module

    monkeypatch.setattr(P, "DEFAULTS", {**P.DEFAULTS, **TINY})
    rng = np.random.default_rng(0)
    for split in ("source", "target", "val"):
        for sub in ("images", "labels"):
            (tmp_path / "my" / split / sub).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(
                str(tmp_path / "my" / split / "images" / f"{i}.png"),
                rng.integers(0, 255, (48, 64, 3), np.uint8),
            )
            cv2.imwrite(
                str(tmp_path / "my" / split / "labels" / f"{i}.png"), rng.integers(0, 3, (48, 64), np.uint8)
            )
    (tmp_path / "my" / "classes.txt").write_text("floor\nwall\nchair\n")
    my = tmp_path / "my"
    overrides = [
        "data=folder", f"data.source_dir={my}/source", f"data.target_dir={my}/target",
        f"data.val_dir={my}/val", f"data.classes_file={my}/classes.txt", "data.crop_size=[32,32]", "uda=dacs",
        "model.pretrained=synthetic", f"paths.data_dir={tmp_path}/data", f"paths.output_dir={tmp_path}/run",
    ]  # fmt: skip
    cfg = compose_cfg("train", [*FAST_TRAINER, *overrides])
    module = build_module(OmegaConf.to_container(cfg, resolve=True))
    assert (tmp_path / "data" / "pretrained" / "synthetic_mit_b0.pth").is_file()
    assert module.num_classes == 3
    with caplog.at_level(logging.WARNING, logger="src.uda.module"):
        plain = train_cfg("experiment=daformer_synthetic", "model.pretrained=null")
        build_module(OmegaConf.to_container(plain, resolve=True))
    assert any("random" in r.getMessage() and "uda.fd" in r.getMessage() for r in caplog.records)

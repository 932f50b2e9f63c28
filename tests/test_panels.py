"""W&B dashboards: rendering helpers, image panels of the training step, validation dashboard, throughput.

Rendering is checked pixel by pixel against hand-computed values; the training integration runs a few
steps on the tiny synthetic data with `logger=csv` (PNG panels, CSV confusion matrices) and with
`logger=wandb` in offline mode (media files in the offline run folder).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from src.callbacks.dashboards import Throughput, ValidationDashboard, _batch_size
from src.callbacks.image_panels import ImagePanels, render_panel
from src.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from src.data.transforms import to_tensor
from src.train import train
from src.uda.module import UDAModule
from src.utils.visualize import (
    colorize,
    confusion_image,
    denormalize,
    grid,
    heatmap,
    overlay,
    resize_to_height,
)
from tests.conftest import compose_cfg

NAMES = list(CITYSCAPES_CLASSES)


# ------------------------------------------------------------------ rendering helpers
def test_colorize_and_overlay_hand_computed():
    label = np.array([[0, 13], [255, 7]], np.uint8)
    rgb = colorize(label)
    assert rgb[0, 0].tolist() == [128, 64, 128]  # road
    assert rgb[0, 1].tolist() == [0, 0, 142]  # car
    assert rgb[1, 0].tolist() == [0, 0, 0]  # ignore -> black
    assert rgb[1, 1].tolist() == list(CITYSCAPES_PALETTE[7])
    image = np.full((2, 2, 3), 100, np.uint8)
    ov = overlay(image, label, alpha=0.5)
    assert ov[0, 0].tolist() == [114, 82, 114]  # 0.5*100 + 0.5*(128, 64, 128)
    assert ov[0, 1].tolist() == [50, 50, 121]  # 0.5*100 + 0.5*(0, 0, 142)
    assert ov[1, 0].tolist() == [100, 100, 100]  # ignore pixels keep the image
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, np.zeros((3, 3), np.uint8))


def test_denormalize_inverts_the_input_normalisation():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(denormalize(to_tensor(img).numpy()), img)


def test_heatmap_and_confusion_image():
    h = heatmap(np.array([[0.0, 0.5, 1.0, np.nan]]))
    assert h[0].tolist() == [[68, 1, 84], [33, 145, 140], [253, 231, 37], [0, 0, 0]]  # viridis anchors
    img = confusion_image(np.array([[3, 1], [0, 0]]), cell=2)
    assert img.shape == (4, 4, 3)
    assert img[0, 0].tolist() == [94, 201, 98]  # recall 3/4 -> 4th anchor
    assert img[0, 3].tolist() == [59, 82, 139]  # 1/4 -> 2nd anchor
    assert img[3, 3].tolist() == [0, 0, 0]  # no ground-truth pixel in row 1


def test_grid_layout():
    a = np.full((10, 20, 3), 1, np.uint8)
    b = np.full((12, 8, 3), 2, np.uint8)
    c = np.full((5, 5, 3), 3, np.uint8)
    g = grid([[a, b], [c, None]], titles=["a", "b"], pad=2)
    # title row 16, rows 12 and 5 (largest tile of each row), columns 20 and 8, pads of 2
    assert g.shape == (16 + 2 + 12 + 2 + 5, 20 + 2 + 8, 3)
    assert (g[18:28, 0:20] == 1).all() and (g[18:30, 22:30] == 2).all() and (g[32:37, 0:5] == 3).all()
    assert (g[28:30, 0:20] == 255).all()  # padding of the shorter tile is background
    assert resize_to_height(a, 20).shape == (20, 40, 3)


# ------------------------------------------------------------------ panel rendering
def _batch(b=2, h=8, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, h, w, generator=g)
    y = torch.randint(0, 19, (b, h, w), generator=g)
    return x, y


def test_render_panel_columns_and_tiles():
    x_s, y_s = _batch(seed=0)
    x_t, pred = _batch(seed=1)
    panel, titles = render_panel({"x_s": x_s, "y_s": y_s, "x_t": x_t, "pred": pred}, class_names=NAMES,
                                 max_images=2, with_legend=False)  # fmt: skip
    assert titles == ["source", "source label", "target", "student prediction"]  # source-only: 4 columns
    assert panel.shape == (16 + 2 + 8 + 2 + 8, 4 * 12 + 3 * 2, 3)
    row1 = 16 + 2 + 8 + 2  # second sample
    src = denormalize(x_s[1].numpy())
    assert np.array_equal(panel[row1 : row1 + 8, 0:12], src)
    assert np.array_equal(panel[row1 : row1 + 8, 14:26], overlay(src, y_s[1].numpy(), alpha=0.5))
    tgt = denormalize(x_t[1].numpy())
    assert np.array_equal(panel[row1 : row1 + 8, 42:54], overlay(tgt, pred[1].numpy(), alpha=0.5))

    w = torch.rand(2, 8, 12)
    full = {"x_s": x_s, "y_s": y_s, "x_t": x_t, "y_t_hat": pred, "w_t": w, "x_mix": x_s, "y_mix": y_s,
            "x_masked": x_t, "pred": pred}  # fmt: skip
    panel, titles = render_panel(full, class_names=NAMES, max_images=1, tile_height=16)
    assert titles == ["source", "source label", "target", "pseudo-label", "pseudo weight", "mixed",
                      "mixed label", "masked", "student prediction"]  # fmt: skip
    assert panel.shape[1] == 9 * 24 + 8 * 2  # 8x12 tiles drawn at 16 rows: 24 columns each
    assert np.array_equal(panel[18:34, 4 * 26 : 4 * 26 + 24], resize_to_height(heatmap(w[0].numpy()), 16))


# ------------------------------------------------------------------ module / callback mechanics
@pytest.fixture(scope="module")
def dacs_module():
    cfg = compose_cfg("train", ["uda=dacs", "model.head_channels=16", "paths.output_dir=/tmp/x"])
    return UDAModule(OmegaConf.to_container(cfg, resolve=True))


def test_module_keeps_panel_tensors_only_when_requested(dacs_module):
    m = dacs_module
    assert m.panel_request is False and m.panel_tensors == {}
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    m.keep_for_panel(x_s=x)
    assert m.panel_tensors == {}
    m.panel_request = True
    try:
        m.keep_for_panel(x_s=x * 1.0)
        kept = m.panel_tensors["x_s"]
        assert kept.device.type == "cpu" and not kept.requires_grad and torch.equal(kept, x.detach())
        with torch.no_grad():
            x.add_(1.0)
        assert not torch.equal(kept, x.detach())  # a copy, not a view of the step's tensor
    finally:
        m.panel_request, m.panel_tensors = False, {}


def test_panel_prediction_leaves_the_student_untouched(dacs_module):
    student = dacs_module.student
    student.train()
    frozen = next(m for m in student.modules() if m is not student)
    frozen.eval()  # a part kept in eval mode while training (e.g. frozen BN) stays in eval mode
    modes = [m.training for m in student.modules()]
    before = {k: v.clone() for k, v in student.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    pred = ImagePanels.predict(student, x)
    assert [m.training for m in student.modules()] == modes and not frozen.training
    assert pred.shape == (2, 32, 32) and pred.dtype == torch.long
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    student.eval()
    with torch.no_grad():
        assert torch.equal(pred, student.predict(x).argmax(1))
    student.train()


class CSVLogger:  # a stand-in with the class name the callbacks look at
    pass


def _trainer(tmp_path, loggers, step):
    return SimpleNamespace(loggers=loggers, default_root_dir=str(tmp_path), is_global_zero=True,
                           global_step=step, sanity_checking=False, world_size=1)  # fmt: skip


def test_callbacks_are_noops_without_a_logger(tmp_path):
    module = SimpleNamespace(panel_request=False, panel_tensors={})
    cb = ImagePanels(every_n_steps=1)
    cb.setup(_trainer(tmp_path, [], 0), module, "fit")
    assert not cb.enabled and not cb.due(1)
    cb.on_train_batch_start(_trainer(tmp_path, [], 0), module, {}, 0)
    assert module.panel_request is False

    class Exploding:
        def compute(self):
            raise AssertionError("the dashboard must not touch the metric without a logger")

    dash = ValidationDashboard()
    dash.setup(_trainer(tmp_path, [], 0), module, "validate")
    dash.on_validation_epoch_end(_trainer(tmp_path, [], 0), SimpleNamespace(val_confmat=Exploding()))
    assert not (tmp_path / "val_dashboard").exists() and dash.written == []


def test_panels_are_requested_every_n_steps(tmp_path):
    module = SimpleNamespace(panel_request=False, panel_tensors={"stale": 1})
    cb = ImagePanels(every_n_steps=500)
    cb.setup(_trainer(tmp_path, [CSVLogger()], 0), module, "fit")
    assert cb.enabled and cb._png_dir == tmp_path / "panels"
    requested = []
    for step in range(1200):  # global step before the step
        cb.on_train_batch_start(_trainer(tmp_path, [CSVLogger()], step), module, {}, 0)
        if module.panel_request:
            requested.append(step + 1)
            assert module.panel_tensors == {}
    assert requested == [500, 1000]


def test_confusion_files_and_batch_size(tmp_path):
    paths = ValidationDashboard.write_files(torch.tensor([[3, 1], [0, 2]]), ["a", "b"], tmp_path / "cm")
    rows = list(csv.reader(paths[0].open()))
    assert rows == [["ground truth \\ prediction", "a", "b"], ["a", "3", "1"], ["b", "0", "2"]]
    assert np.asarray(Image.open(paths[1])).shape == (24, 24, 3)
    assert _batch_size({"source": {"img": torch.zeros(3, 1)}, "target": {"img": torch.zeros(3, 1)}}) == 3
    with pytest.raises(ValueError):
        Throughput(window=0)


# ------------------------------------------------------------------ training runs
def _val_pixels(data_dir: Path) -> int:
    labels = sorted((data_dir / "synthetic" / "val" / "labels").glob("*.png"))
    return int(sum((np.asarray(Image.open(p)) != 255).sum() for p in labels))


def test_training_with_csv_logger_writes_png_panels(train_cfg, data_dir):
    panels = ["callbacks.image_panels.every_n_steps=2", "callbacks.image_panels.max_images=2"]
    # DACS + MIC masking (MIC without the ImageNet feature distance and rare-class sampling: cheaper, the
    # panel has the same columns)
    method = ["experiment=dacs_synthetic", "uda/mask=mic", "uda.mask.masker.block_size=8"]
    cfg = train_cfg(*method, "trainer.max_steps=2", "trainer.val_check_interval=2", *panels)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    assert sorted(p.name for p in (out / "panels").iterdir()) == ["step000002.png"]  # step 1 not drawn
    panel = np.asarray(Image.open(out / "panels" / "step000002.png"))
    # MIC: source, source label, target, pseudo-label, weight, mixed, mixed label, masked, prediction;
    # 64x64 crops drawn at the default 160 rows; two samples, then the legend
    assert panel.shape[1] == 9 * 160 + 8 * 2
    assert panel.shape[0] > 16 + 2 * (160 + 2)
    counts = list(csv.reader((out / "val_dashboard" / "step000002_confusion.csv").open()))
    assert counts[0][1:] == NAMES
    assert sum(int(v) for row in counts[1:] for v in row[1:]) == _val_pixels(data_dir)
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    speeds = [float(r["train/samples_per_sec"]) for r in rows if r.get("train/samples_per_sec")]
    assert len(speeds) == 2 and all(s > 0 for s in speeds)


def test_training_with_wandb_offline_logs_media(train_cfg, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = train_cfg("experiment=dacs_synthetic", "logger=wandb", "trainer.max_steps=2",
                    "trainer.val_check_interval=2", "callbacks.image_panels.every_n_steps=1")  # fmt: skip
    train(cfg)
    out = Path(cfg.paths.output_dir)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))  # syncable with `wandb sync`
    media = runs[0] / "files" / "media"
    assert len(list((media / "images" / "panels").glob("grid_*.png"))) == 2  # steps 1 and 2
    assert list((media / "images" / "mask" / "panels").glob("target_*.mask.png"))  # segmentation overlays
    assert list((media / "images" / "val").glob("confusion_matrix_image_*.png"))
    table = json.loads(next((media / "table" / "val").glob("per_class_iou_[0-9]*.table.json")).read_text())
    assert table["columns"] == ["class", "IoU", "teacher IoU"] and [r[0] for r in table["data"]] == NAMES
    cm = json.loads(next((media / "table" / "val").glob("confusion_matrix_table_*.table.json")).read_text())
    assert len(cm["data"]) == 19 * 19 and sum(r[2] for r in cm["data"]) == _val_pixels(data_dir)
    assert not (out / "panels").exists()  # the PNG sink is only for runs without W&B

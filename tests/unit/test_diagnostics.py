"""Pseudo-label diagnostics against the target's own labels (src/uda/diagnostics.py, issue 17): the labels
ride along for logging only and never change what is trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from src.uda.diagnostics import pseudo_label_quality


def test_quality_numbers():
    y_hat = torch.tensor([[[0, 1], [2, 2]]])
    gt = torch.tensor([[[0, 2], [2, 255]]])
    w = torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])
    out = pseudo_label_quality(y_hat, w, gt)
    assert out["train/pseudo_accuracy"].item() == pytest.approx(2 / 3)  # 3 labelled pixels, 2 right
    assert out["train/pseudo_precision"].item() == pytest.approx(1.0 / 1.5)  # weight on right / all weight
    assert out["train/pseudo_kept"].item() == pytest.approx(2 / 3)
    assert pseudo_label_quality(y_hat, w, torch.full_like(gt, 255)) == {}


def test_the_training_stream_is_the_same_with_and_without_diagnostic_labels(train_cfg):
    def items(flag: bool):
        cfg = train_cfg("experiment=mic_synthetic", f"data.target_diagnostic_labels={str(flag).lower()}")
        dm = instantiate(cfg.data, rcs={"enabled": False}, seed=0, _recursive_=True)
        dm.prepare_data()
        dm.setup("fit")
        ds = dm.train_dataloader().dataset
        return [ds[i] for i in range(4)]

    with_diag, without = items(True), items(False)
    for a, b in zip(with_diag, without):
        assert set(a["target"]) == set(b["target"]) | {"diag_gt"}
        for key in ("img", "valid"):
            assert torch.equal(a["target"][key], b["target"][key])
            assert torch.equal(a["source"][key], b["source"][key])
        assert a["target"]["diag_gt"].shape == a["target"]["img"].shape[-2:]
        assert np.isin(a["target"]["diag_gt"].numpy(), [*range(19), 255]).all()

"""The mIoU metric against cityscapesscripts' own pixel-level evaluation, and the subset rules."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAINID, EVAL_SUBSETS
from src.metrics.miou import confusion_matrix_metric, per_class_iou, resolve_subsets, summarize


def _random_maps(rng, n=3, h=40, w=60):
    gts, preds = [], []
    for _ in range(n):
        gt = rng.integers(0, 19, (h, w))
        gt[rng.random((h, w)) < 0.1] = 255
        gt[gt == 16] = 3  # class "train" absent from the labels ...
        pred = np.where(rng.random((h, w)) < 0.6, np.where(gt == 255, 0, gt), rng.integers(0, 19, (h, w)))
        pred[pred == 16] = 4  # ... and from the predictions: IoU must be null, not 0
        gts.append(gt)
        preds.append(pred)
    return gts, preds


def test_matches_cityscapesscripts(tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    rng = np.random.default_rng(0)
    gts, preds = _random_maps(rng)
    train_to_id = {t: i for i, t in CITYSCAPES_ID_TO_TRAINID.items()}
    to_ids = np.vectorize(lambda t: train_to_id.get(int(t), 0))
    gt_files, pred_files = [], []
    for k, (gt, pred) in enumerate(zip(gts, preds)):
        g, p = tmp_path / f"{k}_gtFine_labelIds.png", tmp_path / f"{k}_pred.png"
        Image.fromarray(to_ids(gt).astype(np.uint8)).save(g)
        Image.fromarray(to_ids(pred).astype(np.uint8)).save(p)
        gt_files.append(str(g))
        pred_files.append(str(p))
    args = ev.args
    args.evalInstLevelScore, args.quiet, args.JSONOutput = False, True, False
    ref = ev.evaluateImgLists(pred_files, gt_files, args)

    metric = confusion_matrix_metric(19)
    for gt, pred in zip(gts, preds):
        metric.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    ours = summarize(metric.compute(), CITYSCAPES_CLASSES, resolve_subsets(["19"], 19))
    for name in CITYSCAPES_CLASSES:
        theirs = ref["classScores"][name]
        if math.isnan(theirs):
            assert ours["per_class"][name] is None, name
        else:
            assert ours["per_class"][name] == pytest.approx(theirs * 100, abs=1e-3), name
    assert ours["per_class"]["train"] is None
    assert ours["mIoU"] == pytest.approx(ref["averageScoreClasses"] * 100, abs=1e-3)


def test_dataset_level_not_per_image_mean():
    # image 1: class 0 perfect (1 px); image 2: class 0 fully wrong (3 px) -> dataset IoU 1/4, not 0.5
    cm = confusion_matrix_metric(2)
    cm.update(torch.tensor([[0]]), torch.tensor([[0]]))
    cm.update(torch.tensor([[1, 1, 1]]), torch.tensor([[0, 0, 0]]))
    iou = per_class_iou(cm.compute())
    assert iou[0].item() == pytest.approx(0.25)
    assert iou[1].item() == 0.0


def test_subsets_average_their_classes_directly():
    iou = torch.zeros(19, 19, dtype=torch.long)
    # diag: class c perfect when c is even, else 0 IoU (1 px predicted as class c+1... keep simple)
    for c in range(19):
        if c % 2 == 0:
            iou[c, c] = 10
        else:
            iou[c, (c + 1) % 19] = 10
    s = summarize(iou, CITYSCAPES_CLASSES, resolve_subsets(["19", "16", "13"], 19))
    per = [v for v in s["per_class"].values()]
    for name, ids in (("16", EVAL_SUBSETS["16"]), ("13", EVAL_SUBSETS["13"])):
        expected = sum(per[i] for i in ids) / len(ids)
        assert s["subsets"][name] == pytest.approx(expected)
    assert len(EVAL_SUBSETS["16"]) == 16 and len(EVAL_SUBSETS["13"]) == 13
    assert not {9, 14, 16} & set(EVAL_SUBSETS["16"])
    assert not {3, 4, 5} & set(EVAL_SUBSETS["13"])


def test_unknown_subset_names_the_key():
    with pytest.raises(ValueError, match="data.eval_subsets"):
        resolve_subsets(["17"], 19)


def test_video_protocol_subsets_need_their_class_count() -> None:
    assert len(resolve_subsets(["11"], 12)["11"]) == 11 and len(resolve_subsets(["15"], 15)["15"]) == 15
    with pytest.raises(ValueError, match="12-class video protocol"):
        resolve_subsets(["11"], 19)

"""Dataset-level mean IoU from a confusion matrix (the protocol of every UDA paper).

IoU_c = TP_c / (TP_c + FP_c + FN_c) with intersections and unions summed over the *whole* dataset
(not averaged per image); mIoU = mean over classes, skipping classes whose union is 0 (absent from
both labels and predictions: reported as `null`). Named subsets (SYNTHIA 16 / 13, VIPER 15,
SYNTHIA-Seq 11) average the per-class IoUs of their classes directly, never the x19/16 shortcut
(daformer_mic.md §6). The confusion matrix is a torchmetrics metric, so it is summed over DDP ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from src.data.classes import EVAL_SUBSET_NUM_CLASSES, EVAL_SUBSETS, IGNORE_INDEX


def confusion_matrix_metric(num_classes: int, ignore_index: int = IGNORE_INDEX) -> MulticlassConfusionMatrix:
    """rows = ground truth, columns = prediction; ignore-index pixels are dropped."""
    return MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index, normalize=None)


def per_class_iou(confmat: torch.Tensor) -> torch.Tensor:
    """IoU per class in [0, 1]; NaN where the union is empty."""
    confmat = confmat.double()
    tp = confmat.diag()
    union = confmat.sum(0) + confmat.sum(1) - tp
    iou = tp / union
    iou[union == 0] = float("nan")
    return iou


def _nanmean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def resolve_subsets(names: Sequence[str], num_classes: int) -> dict[str, tuple[int, ...]]:
    """Subset names -> class ids. 'all' is every class; other names come from classes.EVAL_SUBSETS."""
    out = {}
    for name in names:
        name = str(name)
        if name == "all":
            out[name] = tuple(range(num_classes))
        elif name in EVAL_SUBSETS:
            ids = EVAL_SUBSETS[name]
            protocol = EVAL_SUBSET_NUM_CLASSES.get(name)  # the video protocols fix their class count
            if protocol is not None and protocol != num_classes:
                raise ValueError(
                    f"eval subset {name!r} is the {protocol}-class video protocol but the data has "
                    f"{num_classes} classes: set data.eval_subsets to a subset of this class list"
                )
            if max(ids) >= num_classes:
                raise ValueError(
                    f"eval subset {name!r} needs {max(ids) + 1} classes but the data has {num_classes}"
                )
            out[name] = ids
        else:
            raise ValueError(
                f"unknown eval subset {name!r} (data.eval_subsets); choose from 'all', {sorted(EVAL_SUBSETS)}"
            )
    return out


def summarize(
    confmat: torch.Tensor, class_names: Sequence[str], subsets: dict[str, tuple[int, ...]] | None = None
) -> dict:
    """{'mIoU': %, 'per_class': {name: % or None}, 'subsets': {name: %}} from a confusion matrix."""
    iou = [float(v) * 100.0 for v in per_class_iou(confmat.cpu())]
    per_class = {n: (None if math.isnan(v) else round(v, 4)) for n, v in zip(class_names, iou)}
    miou = _nanmean(iou)
    subs = {}
    for name, ids in (subsets or {}).items():
        m = _nanmean([iou[i] for i in ids])
        subs[name] = None if m is None else round(m, 4)
    return {"mIoU": None if miou is None else round(miou, 4), "per_class": per_class, "subsets": subs}


def format_table(summary: dict, title: str = "per-class IoU (%)") -> str:
    """Plain-text table, printed at the end of every train and eval run."""
    width = max(len(n) for n in summary["per_class"]) + 2
    lines = [title, "-" * (width + 8)]
    for name, v in summary["per_class"].items():
        lines.append(f"{name:<{width}}{'  n/a' if v is None else f'{v:6.2f}'}")
    lines.append("-" * (width + 8))
    rows = [("mIoU", summary["mIoU"])] + [("mIoU" + k, v) for k, v in summary["subsets"].items()]
    for name, v in rows:
        lines.append(f"{name:<{width}}{'  n/a' if v is None else f'{v:6.2f}'}")
    return "\n".join(lines)

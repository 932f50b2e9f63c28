"""Loading ImageNet backbone weights from a local checkpoint file (daformer_mic.md §4.1, §4.3, §8.9).

The reference initialises MiT-B5 from SegFormer's ImageNet-1k ``mit_b5.pth`` (the "pretrained_models"
folder of the SegFormer release, not the ADE/Cityscapes "trained_models") with ``strict=False``, dropping the
classifier, and ResNet-101 from ``open-mmlab://resnet101_v1c``.

Accepted layouts: a raw state dict, or one nested under ``"state_dict"`` or ``"model"``. When keys carry a
backbone prefix (``model.backbone.``, ``module.backbone.``, ``backbone.``) only those keys are kept and the
prefix stripped (so a full segmentor / DAFormer-UDA checkpoint yields its student backbone; the rest is
logged, not returned); a ``module.`` (DDP) prefix is stripped. Classifier keys (SegFormer ``head.*``, timm
``fc.*``) are dropped. A backbone with a ``convert_state_dict`` method (the ResNet) then renames keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from torch import Tensor, nn

from src.utils.safe_load import load_weights_file

__all__ = ["load_backbone_weights", "extract_backbone_state_dict", "WEIGHTS_HELP"]

log = logging.getLogger(__name__)

#: Where to get the weights; used in error messages.
WEIGHTS_HELP = (
    "Download SegFormer's ImageNet-1k encoder weights (e.g. `mit_b5.pth`) from the 'pretrained_models' "
    "folder of the SegFormer release (NVlabs/SegFormer README; not the ADE20K/Cityscapes 'trained_models') "
    "and pass the local path, or, when online, set `model.pretrained=timm` for timm's ImageNet ResNet "
    "weights (timm has no MiT weights)."
)

_BACKBONE_PREFIXES = ("model.backbone.", "module.backbone.", "backbone.")
_STRIP_PREFIXES = ("module.",)
_CLASSIFIER_PREFIXES = ("head.", "fc.")


def _unwrap(checkpoint: object) -> dict[str, Tensor]:
    obj = checkpoint
    while isinstance(obj, Mapping):
        nested = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint is not a state dict (got {type(obj).__name__})")
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}


def extract_backbone_state_dict(checkpoint: object) -> dict[str, Tensor]:
    """Unwrap nesting, select/strip backbone prefixes, strip ``module.`` and drop classifier keys."""
    state = _unwrap(checkpoint)
    for prefix in _BACKBONE_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            ignored = [k for k in state if not k.startswith(prefix)]
            if ignored:
                log.info("Ignoring %d non-backbone keys (e.g. %s)", len(ignored), ignored[:3])
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if key.startswith(_CLASSIFIER_PREFIXES):
            dropped.append(key)
            continue
        out[key] = value
    if dropped:
        log.info("Dropped %d classifier keys: %s", len(dropped), dropped)
    return out


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Load ImageNet weights into ``backbone`` by name (``strict=False``).

    Returns:
        (missing, unexpected) key lists, also logged as warnings.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says how to get the weights).
        ValueError: a key exists in both with different shapes (named in the message), or no key matches.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Pretrained backbone weights not found: '{path}'. {WEIGHTS_HELP}")
    checkpoint = load_weights_file(path, "model.pretrained=", expected=f"ImageNet weights. {WEIGHTS_HELP}")
    state = extract_backbone_state_dict(checkpoint)
    convert = getattr(backbone, "convert_state_dict", None)
    if callable(convert):
        state = convert(state)

    own = backbone.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(
            f"Shape mismatch loading '{path}' into {type(backbone).__name__} "
            f"(wrong model size for these weights?): " + "; ".join(mismatched[:10])
        )
    if own and not any(k in own for k in state):
        raise ValueError(
            f"No key of '{path}' matches {type(backbone).__name__} (checkpoint keys e.g. {list(state)[:5]}, "
            f"model keys e.g. {list(own)[:5]}): wrong checkpoint for this backbone?"
        )

    result = backbone.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    log.info("Loaded %d backbone tensors from %s", len(state) - len(unexpected), path)
    if missing:
        log.warning("Missing keys when loading %s (%d): %s", path, len(missing), missing)
    if unexpected:
        log.warning("Unexpected keys when loading %s (%d): %s", path, len(unexpected), unexpected)
    return missing, unexpected

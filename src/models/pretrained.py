"""Loading ImageNet backbone weights (daformer_mic.md §4.1, §4.3, §8.9).

The reference initialises MiT-B5 from SegFormer's ImageNet-1k ``mit_b5.pth`` (the "pretrained_models" folder
of the SegFormer release, not the ADE/Cityscapes "trained_models") with ``strict=False``, dropping the
classifier, and ResNet-101 from ``open-mmlab://resnet101_v1c``.

``model.pretrained`` values, resolved to one local file by :func:`resolve_pretrained` (the single place that
turns a value into a file; extend it for new kinds of value):

* ``hf:<repo id>`` (e.g. ``hf:nvidia/mit-b5``): the Hugging Face hub copy, downloaded with ``huggingface_hub``
  (the ``hub`` extra) into its cache, or taken from that cache offline;
* a Hugging Face model folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, or a sharded
  ``model.safetensors.index.json``), e.g. ``hf download nvidia/mit-b5 --local-dir mit-b5``;
* a ``.safetensors`` file, or a ``torch.save`` file (``.pth`` / ``.bin`` / ``.pt``; read with
  ``weights_only=True``).

Accepted layouts: a raw state dict, or one nested under ``"state_dict"`` or ``"model"``. When keys carry a
backbone prefix (``model.backbone.``, ``module.backbone.``, ``backbone.``) only those keys are kept and the
prefix stripped (so a full segmentor / DAFormer-UDA checkpoint yields its student backbone; the rest is
logged, not returned); a ``module.`` (DDP) prefix is stripped. Classifier keys (SegFormer ``head.*``, timm
``fc.*``, transformers ``classifier.*``) are dropped. A backbone with a ``convert_state_dict`` method then
renames keys (the ResNet: open-mmlab stem; the MiT: the Hugging Face layouts, ``segformer_hf.py``). A
SegFormer ``config.json`` next to the weights must describe the MiT being built.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from src.models.backbones.segformer_hf import check_hf_config, read_hf_config
from src.utils.safe_load import load_weights_file

__all__ = [
    "load_backbone_weights",
    "extract_backbone_state_dict",
    "resolve_pretrained",
    "read_weights",
    "WEIGHTS_HELP",
    "HF_PREFIX",
]

log = logging.getLogger(__name__)

#: Where to get the weights; used in error messages.
WEIGHTS_HELP = (
    "MiT (SegFormer) ImageNet-1k encoders: model.pretrained=hf:nvidia/mit-b5 (b0..b5; online, pip install -e "
    "'.[hub]'), or a local copy of that repository (`hf download nvidia/mit-b5 --local-dir mit-b5`, then "
    "model.pretrained=/path/to/mit-b5, or its .safetensors file), or the SegFormer release's `mit_b5.pth` "
    "('pretrained_models', not the ADE20K/Cityscapes 'trained_models'); ResNet: a timm resnet101c or "
    "open-mmlab resnet101_v1c file, or model.pretrained=timm when online."
)

#: ``model.pretrained=hf:<repo id>``: a Hugging Face hub repository
HF_PREFIX = "hf:"
#: weight files of a Hugging Face model folder, in order of preference
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

_BACKBONE_PREFIXES = ("model.backbone.", "module.backbone.", "backbone.")
_STRIP_PREFIXES = ("module.",)
_CLASSIFIER_PREFIXES = ("head.", "fc.", "classifier.")


def resolve_pretrained(spec: str | os.PathLike[str]) -> Path:
    """A ``model.pretrained`` value -> the local weights file it names (module docstring lists the values).

    Raises:
        FileNotFoundError: no such file or folder, or a folder without weights (the message says how to get
            them).
        OSError / ValueError: ``hf:`` without ``huggingface_hub``, offline without a cached copy, no such
            repository (one line each, with the fix).
    """
    value = os.fspath(spec)
    if value.startswith(HF_PREFIX):
        return _hf_download(value[len(HF_PREFIX) :].strip())
    path = Path(os.path.expanduser(value))
    if path.is_dir():
        return _hf_folder_weights(path)
    if not path.is_file():
        raise FileNotFoundError(f"Pretrained backbone weights not found: '{path}'. {WEIGHTS_HELP}")
    return path


def _hf_folder_weights(folder: Path) -> Path:
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"Pretrained weights folder '{folder}' holds none of {', '.join(HF_WEIGHT_FILES)}: pass a Hugging "
        f"Face model folder (config.json + model.safetensors or pytorch_model.bin) or a weights file. "
        f"{WEIGHTS_HELP}"
    )


def _hf_download(repo_id: str) -> Path:
    """The weights file of a hub repository: downloaded into the huggingface_hub cache, or read from it."""
    local = (
        f"pass a local copy instead: on a machine that is online run `hf download {repo_id} --local-dir DIR` "
        f"(or download config.json and model.safetensors / pytorch_model.bin from "
        f"https://huggingface.co/{repo_id}) and set model.pretrained=/path/to/DIR"
    )
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError:
        raise ValueError(
            f"model.pretrained=hf:{repo_id} needs huggingface_hub: pip install -e '.[hub]', or {local}"
        ) from None
    if not repo_id or repo_id.count("/") != 1:
        raise ValueError(f"model.pretrained=hf:{repo_id}: expected hf:<owner>/<name>, e.g. hf:nvidia/mit-b5")
    offline: Exception | None = None
    for name in HF_WEIGHT_FILES:
        if name.endswith(".index.json"):
            continue  # the MiT encoders are single files; a sharded repo: download it and pass the folder
        try:
            path = Path(hf_hub_download(repo_id, name))
        except LocalEntryNotFoundError as e:  # offline (or unreachable) and not in the cache
            offline = e
            continue
        except RepositoryNotFoundError as e:
            raise ValueError(
                f"model.pretrained=hf:{repo_id}: no such (public) repository on the Hugging Face hub "
                f"({type(e).__name__}); the MiT encoders are hf:nvidia/mit-b0 ... hf:nvidia/mit-b5"
            ) from None
        except EntryNotFoundError:  # the repository has no file of that name
            continue
        except (HfHubHTTPError, ConnectionError, TimeoutError) as e:
            offline = e
            continue
        try:  # config.json too (architecture check; small), when it can be had
            hf_hub_download(repo_id, "config.json")
        except Exception as e:  # noqa: BLE001 - optional
            log.info("hf:%s: no config.json (%s); architecture not checked", repo_id, type(e).__name__)
        log.info("model.pretrained=hf:%s -> %s", repo_id, path)
        return path
    if offline is not None:
        raise OSError(
            f"model.pretrained=hf:{repo_id}: the Hugging Face hub cannot be reached and its cache holds no "
            f"copy ({type(offline).__name__}); {local}"
        )
    raise FileNotFoundError(
        f"model.pretrained=hf:{repo_id}: the repository holds neither model.safetensors nor "
        f"pytorch_model.bin; {local}"
    )


def read_weights(path: str | os.PathLike[str]) -> object:
    """The object stored in a weights file: safetensors, a sharded safetensors index, or ``torch.save``."""
    path = Path(path)
    try:
        if path.name.endswith(".safetensors.index.json"):
            from safetensors.torch import load_file

            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(load_file(path.parent / shard, device="cpu"))
            return state
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return load_weights_file(path, "model.pretrained=", expected=f"ImageNet weights. {WEIGHTS_HELP}")
    except ValueError:
        raise  # load_weights_file's one line
    except (OSError, KeyError) as e:
        raise ValueError(
            f"cannot read weights '{path}' ({type(e).__name__}: {e}): damaged or incomplete?"
        ) from e
    except Exception as e:  # noqa: BLE001 - safetensors / unpickling errors: one readable line
        raise ValueError(
            f"cannot read weights '{path}' ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
            "not a safetensors or torch.save file of tensors"
        ) from e


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

    ``path`` is any ``model.pretrained`` value (:func:`resolve_pretrained`).

    Returns:
        (missing, unexpected) key lists, also logged as warnings.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says how to get the weights).
        ValueError: a key exists in both with different shapes (named in the message), no key matches, or the
            ``config.json`` next to Hugging Face weights describes another MiT.
    """
    path = resolve_pretrained(path)
    hf_cfg = read_hf_config(path.parent)
    if hf_cfg is not None and hasattr(backbone, "depths") and hasattr(backbone, "out_channels"):
        check_hf_config(hf_cfg, depths=backbone.depths, widths=backbone.out_channels,
                        where=str(path.parent / "config.json"))  # fmt: skip
    state = extract_backbone_state_dict(read_weights(path))
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

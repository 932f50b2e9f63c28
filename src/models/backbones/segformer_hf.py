"""Hugging Face SegFormer encoder weights -> our MiT names (``src.models.backbones.mix_transformer``).

Most users get the ImageNet-1k MiT encoders from the Hugging Face hub (``nvidia/mit-b0`` ... ``-b5``,
``SegformerForImageClassification``). Two key layouts exist; both map to SegFormer's original ``mit_b*.pth``
names, which ours follow (4.x name | >= 5 name -> ours; ``...`` = ``encoder.block.{i}.{j}`` |
``stages.{i}.blocks.{j}`` -> ``block{i+1}.{j}``):

* 4.x: the hub files, and what transformers 5.x ``save_pretrained`` still writes; >= 5: ``SegformerModel``'s
  own ``state_dict()`` in transformers 5;
* ``encoder.patch_embeddings.{i}.proj`` / ``.layer_norm`` | ``stages.{i}.patch_embeddings.proj`` /
  ``.layer_norm`` -> ``patch_embed{i+1}.proj`` / ``.norm``;
* ``...layer_norm_1`` | ``...layernorm_before`` -> ``...norm1``; ``...layer_norm_2`` | ``...layernorm_after``
  -> ``...norm2``;
* ``...attention.self.query`` | ``...attention.q_proj`` -> ``...attn.q``;
* ``...attention.self.key`` + ``.value`` | ``...attention.k_proj`` + ``.v_proj`` -> ``...attn.kv`` (rows
  ``[k; v]``, the order our attention splits them in);
* ``...attention.self.sr`` / ``.layer_norm`` | ``...attention.sequence_reduction.sequence_reduction`` /
  ``.layer_norm`` -> ``...attn.sr`` / ``...attn.norm``;
* ``...attention.output.dense`` | ``...attention.o_proj`` -> ``...attn.proj``;
* ``...mlp.dense1`` / ``dense2`` | ``...mlp.fc1`` / ``fc2`` -> ``...mlp.fc1`` / ``fc2``; ``mlp.dwconv.dwconv``
  is the same in all three;
* ``encoder.layer_norm.{i}`` | ``stages.{i}.layer_norm`` -> ``norm{i+1}``.

Either may carry the ``segformer.`` prefix of the task models (``SegformerForImageClassification``, the hub's
``nvidia/mit-b*``; its ``classifier.*`` is dropped by ``src.models.pretrained``). Key names checked against
transformers 5.24's ``SegformerModel`` and its ``save_pretrained`` output (tests/unit/test_pretrained_hf.py).
Keys of neither layout pass through unchanged, so that loading reports them as unexpected.

Numerics: transformers' SegFormer normalises every LayerNorm with eps 1e-5; SegFormer's original code (and
ours, ``layer_norm_eps``) uses 1e-6 in the blocks and the stage norms. Same weights, outputs equal to ~1e-5.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["is_hf_segformer", "convert_hf_segformer", "check_hf_config", "read_hf_config"]

_PREFIX = "segformer."
_PATCH = re.compile(
    r"^(?:encoder\.patch_embeddings\.(\d+)|stages\.(\d+)\.patch_embeddings)\.(proj|layer_norm)\.(.+)$"
)
_BLOCK = re.compile(r"^(?:encoder\.block\.(\d+)\.(\d+)|stages\.(\d+)\.blocks\.(\d+))\.(.+)\.(weight|bias)$")
_STAGE_NORM = re.compile(r"^(?:encoder\.layer_norm\.(\d+)|stages\.(\d+)\.layer_norm)\.(weight|bias)$")

#: a block's sub-module, 4.x and >= 5 names -> ours; "k" / "v" are concatenated into attn.kv
_BLOCK_PARTS: dict[str, str] = {
    "layer_norm_1": "norm1",
    "layernorm_before": "norm1",
    "layer_norm_2": "norm2",
    "layernorm_after": "norm2",
    "attention.self.query": "attn.q",
    "attention.q_proj": "attn.q",
    "attention.self.key": "k",
    "attention.k_proj": "k",
    "attention.self.value": "v",
    "attention.v_proj": "v",
    "attention.self.sr": "attn.sr",
    "attention.sequence_reduction.sequence_reduction": "attn.sr",
    "attention.self.layer_norm": "attn.norm",
    "attention.sequence_reduction.layer_norm": "attn.norm",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "mlp.dense1": "mlp.fc1",
    "mlp.fc1": "mlp.fc1",
    "mlp.dense2": "mlp.fc2",
    "mlp.fc2": "mlp.fc2",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
}


def _strip(key: str) -> str:
    return key[len(_PREFIX) :] if key.startswith(_PREFIX) else key


def is_hf_segformer(state: Mapping[str, object]) -> bool:
    """True if a key is a transformers SegFormer encoder key (either layout, ``segformer.`` prefix or not)."""
    return any(_PATCH.match(_strip(k)) or _BLOCK.match(_strip(k)) for k in state)


def _one(*groups: str | None) -> int:
    return int(next(g for g in groups if g is not None))


def convert_hf_segformer(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a transformers SegFormer encoder state dict (4.x or >= 5 layout) to our MiT names.

    Keys and values of the attention's separate key / value projections are concatenated (rows ``[k; v]``)
    into our ``attn.kv``; a block that has only one of the two keeps it under its own name (reported as
    unexpected by the loader, ``attn.kv`` as missing). Keys of no known layout pass through unchanged.
    """
    out: dict[str, Tensor] = {}
    kv: dict[tuple[str, str], dict[str, tuple[str, Tensor]]] = {}
    for key, value in state.items():
        k = _strip(key)
        if m := _PATCH.match(k):
            stage = _one(m.group(1), m.group(2)) + 1
            part = "proj" if m.group(3) == "proj" else "norm"
            out[f"patch_embed{stage}.{part}.{m.group(4)}"] = value
        elif m := _STAGE_NORM.match(k):
            out[f"norm{_one(m.group(1), m.group(2)) + 1}.{m.group(3)}"] = value
        elif (m := _BLOCK.match(k)) and m.group(5) in _BLOCK_PARTS:
            stage = _one(m.group(1), m.group(3)) + 1
            index = m.group(2) if m.group(2) is not None else m.group(4)
            ours, param = _BLOCK_PARTS[m.group(5)], m.group(6)
            prefix = f"block{stage}.{index}"
            if ours in ("k", "v"):
                kv.setdefault((prefix, param), {})[ours] = (key, value)
            else:
                out[f"{prefix}.{ours}.{param}"] = value
        else:
            out[key] = value
    for (prefix, param), parts in kv.items():
        if set(parts) == {"k", "v"}:
            out[f"{prefix}.attn.kv.{param}"] = torch.cat([parts["k"][1], parts["v"][1]], dim=0)
        else:
            for original, value in parts.values():
                out[original] = value
    return out


def read_hf_config(folder: str | Path) -> dict | None:
    """``folder/config.json`` of a transformers SegFormer model, or None (absent, or another model type)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}): re-download it or remove it") from e
    return cfg if isinstance(cfg, dict) and cfg.get("model_type") == "segformer" else None


def check_hf_config(cfg: Mapping, *, depths: Sequence[int], widths: Sequence[int], where: str) -> None:
    """One-line error if a SegFormer ``config.json`` describes another MiT than the model being built."""
    theirs = (list(cfg.get("depths") or []), list(cfg.get("hidden_sizes") or []))
    ours = (list(depths), list(widths))
    if theirs[0] and theirs[1] and theirs != ours:
        raise ValueError(
            f"{where} describes a MiT with depths {theirs[0]} and hidden_sizes {theirs[1]}, but the model "
            f"built here has depths {ours[0]} and widths {ours[1]}: pick the matching weights (nvidia/mit-b5 "
            f"for model=daformer_mitb5, nvidia/mit-b0 for daformer_mitb0, ...) or the matching model"
        )

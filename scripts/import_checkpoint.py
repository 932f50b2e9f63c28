#!/usr/bin/env python
"""Import a released DAFormer / HRDA / MIC checkpoint (mmseg 0.16 layout) as a checkpoint of this library.

    python scripts/import_checkpoint.py <released .pth> --method daformer|hrda|mic --data gta|synthia \\
        --out <our .ckpt> [--imagenet hf:nvidia/mit-b5] [Hydra overrides ...]

The released file's segmentors (``model.*`` student, ``ema_model.*`` EMA teacher, ``imnet_model.*`` ImageNet
model; src/models/released.py has the key map) become ``student.*``, ``teacher.model.*`` and ``fd.encoder.*``
of the experiment's module, and the checkpoint carries that experiment's whole resolved config
(``hyper_parameters.cfg``, composed from conf/ as ``src.train`` does), so that

    python -m src.eval ckpt_path=<our .ckpt>                   # the published protocol of the experiment
    python -m src.predict ckpt_path=<our .ckpt> input=... output=...
    python -m src.export ckpt_path=<our .ckpt> format=onnx
    python -m src.train experiment=<the same> model.init_from=<our .ckpt or the .pth itself>

accept it. The experiment: ``daformer_<data>`` (DAFormer), ``hrda_<data>`` (HRDA), ``mic_hrda_<data>`` (MIC on
the HRDA host; ``mic_<data>`` for a MIC(DAFormer) file). The host (HRDA or not), the MiT variant, the head
width and the classes are read from the tensors' shapes, so the model always fits the file.

Files without an ``ema_model``: the teacher is a copy of the student (as an EMA teacher starts). Without an
``imnet_model``: ``--imagenet <model.pretrained value>`` loads the ImageNet encoder of the feature distance;
without either the config gets ``uda/fd=none`` (eval, predict and export never use it; training from the file
with ``model.init_from`` takes the run's own ``model.pretrained``). Extra Hydra overrides are applied to the
composed config (e.g. ``paths.data_dir=/data``: paths are resolved when importing; set ``DATA_ROOT`` or pass
it).
The file is read with ``weights_only=True``; ``--trust`` unpickles anything (only for a file you trust).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from src.models.released import describe_segmentor  # noqa: E402
from src.uda.init_from import SegmentorWeights, load_exactly, read_segmentor_weights  # noqa: E402

METHODS = ("daformer", "hrda", "mic")
DATA = ("gta", "synthia")
#: (--method, host read from the file) -> experiment prefix (conf/experiment/<prefix>_<data>.yaml)
EXPERIMENTS = {
    ("daformer", "daformer"): "daformer",
    ("hrda", "hrda"): "hrda",
    ("mic", "hrda"): "mic_hrda",
    ("mic", "daformer"): "mic",
}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import src.utils.config  # noqa: F401  (resolvers)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def experiment_for(method: str, host: str, data: str, *, where: str) -> str:
    if (method, host) not in EXPERIMENTS:
        held = "an HRDA model (decode_head.scale_attention.*)" if host == "hrda" else "a DAFormer-host model"
        fits = "--method hrda or --method mic" if host == "hrda" else "--method daformer or --method mic"
        raise ValueError(f"{where} holds {held}, which --method {method} does not fit: use {fits}")
    return f"{EXPERIMENTS[(method, host)]}_{data}"


def import_checkpoint(
    path: str | Path,
    *,
    method: str,
    data: str,
    out: str | Path,
    imagenet: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    trust: bool = False,
) -> dict:
    """Write ``out`` (module docstring); returns what was imported (also stored as ``imported_from``)."""
    from omegaconf import OmegaConf

    from src.models.pretrained import load_backbone_weights
    from src.uda.video.module import build_module

    if method not in METHODS or data not in DATA:
        raise ValueError(f"--method must be one of {METHODS} and --data one of {DATA}, got {method}, {data}")
    path, out = Path(path).expanduser(), Path(out).expanduser().resolve()
    w: SegmentorWeights = read_segmentor_weights(path, what=str(path), trust=trust)
    if w.layout != "mmseg":
        raise ValueError(f"{path} is already a checkpoint of this library: use it as it is")
    info = describe_segmentor(w.student, where=str(path))
    experiment = experiment_for(method, info.host, data, where=str(path))
    fd = "imnet_model" if w.fd_encoder is not None else (f"--imagenet {imagenet}" if imagenet else None)
    head = "null" if info.head_channels == 256 else str(info.head_channels)
    cfg = compose(
        [
            f"experiment={experiment}",
            f"model.name={info.model_name}",
            f"model.head_channels={head}",
            "model.pretrained=null",
            f"paths.output_dir={out.parent}",
            *([] if fd else ["uda/fd=none"]),
            *overrides,
        ]
    )
    if int(cfg.data.num_classes) != info.num_classes:
        raise ValueError(
            f"{path} predicts {info.num_classes} classes but data={cfg.data.name} has {cfg.data.num_classes}"
        )
    container = OmegaConf.to_container(cfg, resolve=True)
    module = build_module(container, load_pretrained=False)
    load_exactly(module.student, w.student, what=f"{path}: its student (model.*)")
    teacher = getattr(module, "teacher", None)
    if teacher is not None:
        if w.teacher is not None:
            load_exactly(teacher.model, w.teacher, what=f"{path}: its EMA teacher (ema_model.*)")
        else:
            teacher.model.load_state_dict(module.student.state_dict())
    if module.fd is not None:
        if w.fd_encoder is not None:
            load_exactly(module.fd.encoder, w.fd_encoder, what=f"{path}: its ImageNet model (imnet_model.*)")
        else:
            missing, _ = load_backbone_weights(module.fd.encoder, imagenet)
            if missing:
                raise ValueError(
                    f"--imagenet {imagenet} lacks {len(missing)} encoder tensors (e.g. {missing[0]})"
                )
    imported = {
        "file": str(path),
        "method": method,
        "data": data,
        "experiment": experiment,
        "model": info.model_name,
        "head_channels": info.head_channels,
        "teacher": "ema_model"
        if w.teacher is not None
        else "copy of the student (the file holds no ema_model)",
        "fd_encoder": fd or "none (the file holds no imnet_model: uda.fd is none)",
        "ignored_keys": len(w.ignored),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {"cfg": container},
            "imported_from": imported,
        },
        out,
    )
    return imported


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="the released .pth (DAFormer / HRDA / MIC, mmseg 0.16 layout)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--data", required=True, choices=DATA, help="the source domain of the release")
    p.add_argument("--out", required=True, help="the checkpoint to write (.ckpt)")
    p.add_argument("--imagenet", default=None, help="ImageNet MiT weights for a file without imnet_model.*")
    p.add_argument("--trust", action="store_true", help="unpickle the file fully (weights_only=False)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the composed config (key=value)")
    args = p.parse_intermixed_args(argv)
    from src.utils.cli import USER_ERRORS, one_line

    try:
        info = import_checkpoint(
            args.checkpoint,
            method=args.method,
            data=args.data,
            out=args.out,
            imagenet=args.imagenet,
            overrides=args.overrides,
            trust=args.trust,
        )
    except USER_ERRORS as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    print(f"{args.checkpoint} -> {args.out}: experiment={info['experiment']} model={info['model']}")
    print(f"  teacher: {info['teacher']}; ImageNet FD encoder: {info['fd_encoder']}; "
          f"{info['ignored_keys']} keys ignored")  # fmt: skip
    print(f"  evaluate: python -m src.eval ckpt_path={args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

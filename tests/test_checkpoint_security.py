"""A checkpoint cannot run code (issue 16, part 1): its stored config may only name the library's own
targets at each key (src/utils/safe_load.py), checked before anything of it is built or imported, by every
entry point that reads a checkpoint: `load_module` (image and video), `src.eval`, `src.predict`, the resume
of `src.train` and the video teacher switch. Each tampered checkpoint below is refused in one line naming
the key and the target, and the file its code would create is never created. Genuine checkpoints of every
kind (every experiment, every method, image and video) still load.

The checkpoints are written directly from a freshly built tiny module (as tests/test_predict.py does); one
real CLI run each for `src.eval` and `src.predict`, the other entry points in-process through the same
`readable_errors` wrapper as their CLIs.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from src.eval import evaluate
from src.predict import predict
from src.train import train
from src.uda.module import UDAModule
from src.uda.module import load_module as load_image_module
from src.uda.video.module import VideoUDAModule, build_module
from src.uda.video.module import load_module as load_video_module
from src.uda.video.teacher_switch import load_model_weights
from src.utils.cli import check_resume_checkpoint, readable_errors
from src.utils.safe_load import (
    CONF_DIR,
    UnsafeCheckpointError,
    allow_list,
    check_checkpoint_config,
    load_weights_file,
)
from tests.conftest import CONF, ROOT, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.endswith("_base"))
UDA_METHODS = sorted(p.stem for p in (CONF / "uda").glob("*.yaml"))


def _cfg(*overrides: str) -> dict:
    cfg = compose_cfg("train", ["paths.output_dir=/tmp/x", "model.head_channels=16", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def _save(path: Path, cfg: dict, state: dict) -> Path:
    """A checkpoint as Lightning writes it: weights, config and the training state a resume needs."""
    ckpt = {"state_dict": state, "hyper_parameters": {"cfg": cfg}, "optimizer_states": [], "global_step": 0}
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> tuple[dict, dict]:
    """(config, state dict) of a tiny DACS module (student + EMA teacher)."""
    cfg = _cfg("uda=dacs")
    torch.manual_seed(0)
    return cfg, UDAModule(cfg).state_dict()


def _tamper(cfg: dict, kind: str, pwned: Path) -> tuple[dict, str, str]:
    """(tampered config, the key the error must name, the target it must name)."""
    bad = copy.deepcopy(cfg)
    if kind == "open":  # the reproduction: creates / empties any file
        bad["uda"]["pseudo"] = {"_target_": "builtins.open", "file": str(pwned), "mode": "w"}
        return bad, "uda.pseudo._target_", "builtins.open"
    if kind == "os.system":  # a shell command, nested in a strategy's sub-node
        bad["uda"]["mix"]["augment"] = {"_target_": "os.system", "_args_": [f"touch {pwned}"]}
        return bad, "uda.mix.augment._target_", "os.system"
    if kind == "module":  # uda.module is imported as a class
        bad["uda"]["module"] = "subprocess.Popen"
        return bad, "uda.module", "subprocess.Popen"
    if kind == "import":  # a module whose import alone has a side effect (evil_mod.py, on sys.path)
        bad["uda"]["module"] = "evil_mod.Evil"
        return bad, "uda.module", "evil_mod.Evil"
    if kind == "list":  # deep inside a list
        bad["uda"]["mix"]["augment"]["extra"] = [
            {"a": [{"_target_": "os.system", "_args_": [f"touch {pwned}"]}]}
        ]
        return bad, "uda.mix.augment.extra[0].a[0]._target_", "os.system"
    if kind == "partial":  # a _partial_ node
        bad["uda"]["teacher"] = {"_target_": "shutil.copyfile", "_partial_": True, "dst": str(pwned)}
        return bad, "uda.teacher._target_", "shutil.copyfile"
    if kind == "wrong_slot":  # the library's own class, but not one it defines for that key
        bad["uda"]["pseudo"]["_target_"] = "src.uda.mixing.classmix.ClassMix"
        return bad, "uda.pseudo._target_", "src.uda.mixing.classmix.ClassMix"
    if kind == "data":  # the data config is built from the checkpoint by src.eval
        bad["data"]["val"]["_target_"] = "numpy.load"
        return bad, "data.val._target_", "numpy.load"
    if kind == "interpolation":  # a resolver that creates a target node Hydra would then call
        bad["uda"]["pseudo"]["threshold"] = (
            f"${{oc.create:'{{_target_: builtins.open, file: {pwned}, mode: w}}'}}"
        )
        return bad, "uda.pseudo.threshold", "${oc.create:"
    raise AssertionError(kind)


KINDS = ["open", "os.system", "module", "import", "list", "partial", "wrong_slot", "data", "interpolation"]
ENTRY_POINTS_KINDS = ["open", "os.system", "module", "import"]  # the three (+ the import side effect)


@pytest.fixture
def evil_path(tmp_path, monkeypatch) -> Path:
    """An importable `evil_mod` whose import creates tmp_path/pwned (to prove nothing is imported)."""
    (tmp_path / "evil_mod.py").write_text(
        f"open({str(tmp_path / 'pwned')!r}, 'w').close()\nclass Evil:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _assert_refusal(msg: str, path: Path, key: str, target: str) -> None:
    assert "\n" not in msg.strip(), msg
    assert f"checkpoint {path}: {key} = {target}" in msg, msg
    assert "refusing to load" in msg and "weights_only" not in msg


@pytest.mark.parametrize("kind", KINDS)
def test_load_module_refuses_a_tampered_config(kind, genuine, evil_path):
    cfg, state = genuine
    pwned = evil_path / "pwned"
    bad, key, target = _tamper(cfg, kind, pwned)
    path = _save(evil_path / f"{kind}.ckpt", bad, state)
    for load in (load_image_module, load_video_module):
        with pytest.raises(UnsafeCheckpointError) as e:
            load(path)
        _assert_refusal(str(e.value), path, key, target)
    assert not pwned.exists() and "evil_mod" not in sys.modules


@pytest.mark.parametrize("kind", ENTRY_POINTS_KINDS)
def test_every_entry_point_refuses_it(kind, genuine, evil_path, train_cfg, capsys, monkeypatch):
    """src.eval / src.predict / src.train resume (their CLI functions behind readable_errors), the resume
    check and the teacher switch: one line `error: ...`, exit status 1, nothing created or imported."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg, state = genuine
    pwned = evil_path / "pwned"
    bad, key, target = _tamper(cfg, kind, pwned)
    path = _save(evil_path / f"{kind}.ckpt", bad, state)
    (evil_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(evil_path / "in" / "a.png")
    runs = {
        "src.eval": (evaluate, compose_cfg("eval", [f"ckpt_path={path}", f"paths.output_dir={evil_path}/e"])),
        "src.predict": (predict, compose_cfg("predict", [
            f"ckpt_path={path}", f"input={evil_path / 'in'}", f"output={evil_path / 'p'}",
            f"paths.output_dir={evil_path / 'p'}", "progress=false"])),
        "src.train": (train, train_cfg("uda=dacs", f"ckpt_path={path}")),
    }  # fmt: skip
    for name, (fn, run_cfg) in runs.items():
        with pytest.raises(SystemExit) as e:
            readable_errors(fn)(run_cfg)
        err = capsys.readouterr().err
        assert e.value.code == 1, name
        assert err.count("\n") == 1 and err.startswith("error: "), (name, err)
        _assert_refusal(err, path, key, target)
    with pytest.raises(UnsafeCheckpointError) as e:  # the resume check alone, on the module of the run
        check_resume_checkpoint(path, UDAModule(cfg))
    _assert_refusal(str(e.value), path, key, target)
    with pytest.raises(UnsafeCheckpointError) as e:  # uda.teacher.checkpoint=<this file> (only its tensors)
        load_model_weights(torch.nn.Linear(1, 1), path)
    _assert_refusal(str(e.value), path, key, target)
    assert not pwned.exists() and "evil_mod" not in sys.modules
    assert not (evil_path / "p").exists() and not (evil_path / "e" / "results.json").exists()


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


@pytest.mark.parametrize(("module", "kind"), [("src.eval", "open"), ("src.predict", "os.system")])
def test_cli_refuses_a_tampered_checkpoint(module, kind, genuine, tmp_path):
    cfg, state = genuine
    pwned = tmp_path / "pwned"
    bad, key, target = _tamper(cfg, kind, pwned)
    path = _save(tmp_path / "x.ckpt", bad, state)
    args = [f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}"]
    if module == "src.predict":
        (tmp_path / "in").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "a.png")
        args.append(f"input={tmp_path / 'in'}")
    r = _cli(module, *args)
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    _assert_refusal(errors[0], path, key, target)
    assert not pwned.exists()


# ------------------------------------------------------------------------------------ genuine checkpoints
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_passes_the_check(experiment):
    """The stored config of a run of any experiment (resolved, as src.train stores it) is allowed."""
    check_checkpoint_config(_cfg(f"experiment={experiment}"), f"<{experiment}>")


@pytest.mark.parametrize(
    "overrides",
    [[f"uda={m}"] for m in UDA_METHODS]
    + [["uda=mic", "uda/mix=quadmix", "uda/pseudo=cdm", "uda/mask=cam", "uda/fd=fdm"],
       ["uda=udass_video", "uda/teacher=switch"], ["trainer=ddp", "logger=wandb"],
       ["data=folder", "data.source_dir=/s", "data.target_dir=/t", "data.val_dir=/v"],
       ["data=clip_folder", "model=accel_daformer_mitb0", "uda=udass_video", "data.source_dir=/s",
        "data.target_dir=/t", "data.val_dir=/v"],
       ["model=hrda_daformer_mitb5"], ["model=accel_deeplabv2_r101"]],
    ids=lambda o: " ".join(o),
)  # fmt: skip
def test_every_group_option_passes_the_check(overrides):
    check_checkpoint_config(_cfg(*overrides), "<composed>")


@pytest.mark.parametrize(
    "overrides",
    [["uda=dacs"], ["uda=source_only"], ["experiment=mic_hrda_synthetic"], ["experiment=udass_synthetic"],
     ["experiment=tps_synthetic_video"], ["experiment=udass_synthetic_video", "uda/teacher=switch"]],
    ids=lambda o: " ".join(o),
)  # fmt: skip
def test_genuine_checkpoints_of_every_kind_load(overrides, tmp_path):
    """Image (DACS, source-only, MIC on the HRDA host, UDASS QuadMix with its rare-class paster) and video
    (TPS; UDASS video with the teacher switch) checkpoints load as their own class, with their weights."""
    cfg = _cfg(*overrides, "model.pretrained=null")
    torch.manual_seed(0)
    module = build_module(cfg, load_pretrained=False)
    path = _save(tmp_path / "ok.ckpt", cfg, module.state_dict())
    loaded = load_video_module(path)
    assert type(loaded) is type(module)
    assert isinstance(loaded, VideoUDAModule) == bool(cfg["uda"].get("module"))
    theirs = loaded.state_dict()
    for k, v in module.state_dict().items():
        assert torch.equal(v, theirs[k]) if isinstance(v, torch.Tensor) else k in theirs, k
    check_resume_checkpoint(path, module)  # the resume check passes too
    load_model_weights(copy.deepcopy(module.student), path)  # and the teacher switch reads its student


def test_the_runs_own_callbacks_do_not_make_its_checkpoint_unloadable(genuine, tmp_path):
    """`+callbacks.<name>._target_=...` (tests/probes.py) is stored too; no loader builds callbacks or loggers
    from a checkpoint, so it loads, and nothing of that node runs; an interpolation there is refused."""
    cfg, state = genuine
    pwned = tmp_path / "pwned"
    extra = copy.deepcopy(cfg)
    extra["callbacks"]["probe"] = {"_target_": "builtins.open", "file": str(pwned), "mode": "w"}
    extra["logger"]["mine"] = {"_target_": "mypkg.MyLogger"}
    path = _save(tmp_path / "probe.ckpt", extra, state)
    assert load_video_module(path).cfg["callbacks"]["probe"]["file"] == str(pwned)
    check_resume_checkpoint(path, UDAModule(cfg))
    assert not pwned.exists()
    extra["callbacks"]["probe"]["file"] = "${oc.env:HOME}"
    with pytest.raises(
        UnsafeCheckpointError, match=r"callbacks\.probe\.file = \$\{oc\.env:HOME\} is an interp"
    ):
        load_image_module(_save(tmp_path / "interp.ckpt", extra, state))


# ------------------------------------------------------------------------------------- the allow-list
def test_allow_list_is_built_from_conf():
    allow = allow_list()
    assert "src.uda.pseudo_label.PseudoLabeler" in allow.allowed("uda.pseudo._target_")
    assert "src.uda.video.module.VideoUDAModule" in allow.allowed("uda.module")
    assert "src.uda.mixing.classmix.ClassMix" not in allow.allowed("uda.pseudo._target_")
    # `dataset: ${data.source}` (a video experiment): allowed what data.source allows
    assert "src.data.datasets.viper_seq.ViperSeqDataset" in allow.allowed(
        "uda.mix.rare_paster.loader.dataset._target_"
    )
    assert not any(t.startswith(("builtins.", "os.", "subprocess.")) for t in allow.all_targets())


def test_a_new_config_file_is_allowed_at_its_package(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "uda" / "pseudo" / "mine.yaml").write_text("_target_: src.uda.my_labeler.MyLabeler\n")
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nuda:\n  mix:\n    extra:\n      - _target_: src.uda.extra.Extra\n"
    )
    allow = allow_list(conf)
    assert "src.uda.my_labeler.MyLabeler" in allow.allowed("uda.pseudo._target_")
    assert "src.uda.extra.Extra" in allow.allowed("uda.mix.extra[]._target_")
    assert "src.uda.my_labeler.MyLabeler" not in allow_list().allowed("uda.pseudo._target_")


def test_a_group_a_defaults_list_places_is_allowed_there(tmp_path):
    """`- /uda/augment@augment: dacs` in conf/uda/mix/classmix.yaml puts the group's configs at
    uda.mix.augment: their targets are allowed there (and at the other places that select it), not at
    unrelated keys."""
    allow = allow_list()
    for slot in ("uda.mix.augment._target_", "uda.mask.augment._target_", "uda.pseudo.augment._target_"):
        assert "src.uda.augment.StrongAugment" in allow.allowed(slot), slot
    assert "src.uda.augment.StrongAugment" not in allow.allowed("uda.pseudo._target_")
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "uda" / "mix" / "mine.yaml").write_text(
        "defaults:\n  - /uda/augment@post: dacs\n  - _self_\n_target_: src.uda.mixing.classmix.ClassMix\n"
    )
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /uda/augment@uda.teacher.view: tps\n"
    )
    mine = allow_list(conf)
    assert "src.uda.augment.StrongAugment" in mine.allowed("uda.mix.post._target_")
    assert "src.uda.video.tps_augment.TPSStrongAugment" in mine.allowed("uda.teacher.view._target_")
    assert not allow_list().allowed("uda.mix.post._target_")


def test_a_checkpoint_that_is_no_mapping_or_names_no_string_is_refused():
    with pytest.raises(UnsafeCheckpointError, match="not a config mapping"):
        check_checkpoint_config(["x"], "c.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"uda\.pseudo\._target_ = \{'a': 1\} is not a target"):
        check_checkpoint_config({"uda": {"pseudo": {"_target_": {"a": 1}}}}, "c.ckpt")


class Pickled:
    """Any Python object: torch.save pickles it, a weights-only load refuses it."""


def test_a_pickled_object_is_refused_without_the_weights_only_hint(tmp_path):
    torch.save({"state_dict": {}, "obj": Pickled()}, tmp_path / "obj.ckpt")
    for load in (load_image_module, lambda p: load_weights_file(p, "ckpt_path=")):
        with pytest.raises(ValueError) as e:
            load(tmp_path / "obj.ckpt")
        msg = str(e.value)
        assert str(tmp_path / "obj.ckpt") in msg and "not a plain tensor checkpoint" in msg
        assert "weights_only" not in msg and "\n" not in msg
    (tmp_path / "garbage.ckpt").write_bytes(b"garbage")  # not a pickle at all: damaged, not "pickled"
    with pytest.raises(ValueError, match=r"garbage\.ckpt is not a loadable checkpoint \(damaged") as e:
        load_image_module(tmp_path / "garbage.ckpt")
    assert "weights_only" not in str(e.value)

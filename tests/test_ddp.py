"""DDP on the CPU (gloo, 2 processes): the teacher stays identical across ranks, gradients are all-reduced
once a step with several backward passes (`train.backward=deferred`), each rank draws its own data, the
validation set is split without double counting, a multirun writes one directory per job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from src.data.datamodule import ShardSampler
from tests.conftest import FAST_TRAINER, ROOT, TINY_SYNTHETIC, compose_cfg


def test_shard_sampler_splits_without_padding():
    shards = [list(ShardSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert [len(ShardSampler(7, rank=r, world_size=3)) for r in range(3)] == [3, 2, 2]
    assert sorted(sum(shards, [])) == list(range(7))  # every image once: no padding, no repeat
    assert list(ShardSampler(4)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="rank 2"):
        ShardSampler(4, rank=2, world_size=2)


def test_ddp_trainer_config():
    cfg = compose_cfg("train", ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    t = cfg.trainer
    assert t.strategy._target_ == "pytorch_lightning.strategies.DDPStrategy"
    assert t.strategy.find_unused_parameters is True and t.sync_batchnorm is False
    assert (t.devices, t.num_nodes, t.use_distributed_sampler) == (4, 2, False)
    assert t.log_every_n_steps == 50 and t.precision == "32-true"  # everything else from trainer/default
    assert cfg.train.backward == "deferred" and cfg.train.on_nonfinite == "stop"


# ---------------------------------------------------------------- DDP mechanics (plain torch, fast)
def _no_sync_worker(rank: int, world: int, port: int, mode: str, out: str) -> None:
    """A = used by both backward passes, B = only by the first (as a strategy-only parameter)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.ModuleDict({"a": a, "b": b}), find_unused_parameters=True
    )
    calls = [0]

    def count(state, bucket):
        calls[0] += 1
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        return allreduce_hook(state, bucket)

    model.register_comm_hook(None, count)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(rank + 1))  # each rank its own data
    # Lightning prepares the reducer before each manual backward; DDP's forward does the same.
    first = model.module["b"](model.module["a"](x)).sum()
    second = model.module["a"](x * 2).pow(2).sum()
    if mode == "deferred":
        with model.no_sync():  # Lightning leaves the reducer unprepared here
            first.backward()
    else:
        model.reducer.prepare_for_backward([first])
        first.backward()
    model.reducer.prepare_for_backward([second])
    second.backward()
    torch.save({"grads": [p.grad.clone() for p in model.parameters()], "calls": calls[0]}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_sync_defers_the_all_reduce_and_still_averages(tmp_path):
    """The rule `train.backward=deferred` relies on: gradients of backward passes run under `no_sync`
    (including those of parameters the last pass does not reach) are averaged by the one synced pass."""
    res = {}
    for mode in ("deferred", "every"):
        out = tmp_path / mode
        out.mkdir()
        mp.spawn(_no_sync_worker, args=(2, _free_port(), mode, str(out)), nprocs=2, join=True)
        res[mode] = [torch.load(out / f"{r}.pt") for r in range(2)]
    # the reference: the mean over ranks of each rank's own full gradient
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    ref = []
    for rank in range(2):
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(rank + 1))
        for p in (*a.parameters(), *b.parameters()):
            p.grad = None
        (b(a(x)).sum() + a(x * 2).pow(2).sum()).backward()
        ref.append([p.grad.clone() for p in (*a.parameters(), *b.parameters())])
    mean = [(g0 + g1) / 2 for g0, g1 in zip(*ref)]
    for mode in ("deferred", "every"):
        for r in range(2):
            for g, m in zip(res[mode][r]["grads"], mean):
                torch.testing.assert_close(g, m)  # B's gradient too, though only the first pass used it
    assert res["deferred"][0]["calls"] == 1 and res["every"][0]["calls"] == 2  # one bucket


# ---------------------------------------------------------------- the training run (src.train, 2 ranks)
def _run_train(tmp_path: Path, data_dir: Path, *overrides: str, multirun: bool = False, timeout: int = 300):
    cmd = [sys.executable, "-m", "src.train", *(["-m"] if multirun else []), f"paths.data_dir={data_dir}",
           *TINY_SYNTHETIC, *FAST_TRAINER, "experiment=dacs_synthetic", "trainer=ddp",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=2",
           "trainer.val_check_interval=2", "+callbacks.probe._target_=tests.probes.RankProbe",
           *overrides]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _val_label_pixels(data_dir: Path) -> int:
    labels = sorted((data_dir / "synthetic" / "val" / "labels").glob("*.png"))
    return sum(int((np.asarray(Image.open(p)) != 255).sum()) for p in labels)


def _check_ranks(probe_dir: Path, data_dir: Path) -> list[dict]:
    ranks = [torch.load(probe_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]
    a, b = ranks
    assert a["world_size"] == b["world_size"] == 2 and a["step"] == b["step"] == 2
    params = [k for k in a["state"] if k in a["params"] or k.startswith("teacher.")]
    teacher = [k for k in a["state"] if k.startswith("teacher.model.")]
    assert teacher and any(k.startswith("student.") for k in params)
    for k in [*params, *teacher]:
        if k in a["params"] or "running_" not in k:  # parameters: identical after every step
            assert torch.equal(a["state"][k], b["state"][k]), k
    # the EMA teacher really moved (2 steps), and identically: compare with the student it averages
    assert any(not torch.equal(a["state"][k], a["state"][k.replace("teacher.model.", "student.")])
               for k in teacher if "weight" in k)  # fmt: skip
    # what validation sees, buffers included (BN statistics broadcast from rank 0): identical
    assert a["val_state"].keys() == b["val_state"].keys()
    for k in a["val_state"]:
        assert torch.equal(a["val_state"][k], b["val_state"][k]), k
    # each rank its own data stream (and so its own rare-class draws and mixing masks)
    assert a["first_source_sum"] != b["first_source_sum"]
    # the confusion matrix is reduced over ranks and counts every validation pixel exactly once
    assert a["val_pixels"] == b["val_pixels"] == _val_label_pixels(data_dir)
    return ranks


def test_ddp_two_processes_teacher_identical(tmp_path, data_dir):
    run = tmp_path / "run"
    _run_train(tmp_path, data_dir, f"hydra.run.dir={run}", f"+callbacks.probe.dirpath={run}/probe")
    a, b = _check_ranks(run / "probe", data_dir)
    grad_bytes = 4 * sum(a["state"][k].numel() for k in a["params"] if k.startswith("student."))
    # deferred: the two backward passes of DACS (source, mix) are all-reduced once, all gradients at once
    assert a["allreduce_bytes"] == b["allreduce_bytes"] == [grad_bytes, grad_bytes]
    assert a["allreduce_calls"] == b["allreduce_calls"]
    out = json.loads((run / "results.json").read_text())
    assert out["steps"] == 2 and 0.0 <= out["mIoU"] <= 100.0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # rank 1 wrote into the same directory


@pytest.mark.slow
def test_ddp_backward_modes_same_result(tmp_path, data_dir):
    """every: one all-reduce per backward pass (2x the bytes for DACS); sum: one backward; deferred: one
    all-reduce. All three give the same weights up to float rounding."""
    res = {}
    for mode in ("deferred", "every", "sum"):
        run = tmp_path / mode
        _run_train(tmp_path, data_dir, f"hydra.run.dir={run}", f"+callbacks.probe.dirpath={run}/probe",
                   f"train.backward={mode}")  # fmt: skip
        res[mode] = _check_ranks(run / "probe", data_dir)[0]
    once = res["deferred"]["allreduce_bytes"]
    assert res["sum"]["allreduce_bytes"] == once
    assert res["every"]["allreduce_bytes"] == [2 * n for n in once]
    for mode in ("every", "sum"):
        for k in res["deferred"]["params"]:
            torch.testing.assert_close(
                res[mode]["state"][k], res["deferred"]["state"][k], atol=1e-5, rtol=1e-4
            )


@pytest.mark.slow
def test_ddp_multirun_one_directory_per_job(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    _run_train(tmp_path, data_dir, "seed=0,1", f"hydra.sweep.dir={sweep}",
               "+callbacks.probe.dirpath=${paths.output_dir}/probe", multirun=True, timeout=600)  # fmt: skip
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    seeds = []
    for job in jobs:
        out = json.loads((sweep / job / "results.json").read_text())
        seeds.append(out["seed"])
        _check_ranks(sweep / job / "probe", data_dir)  # both ranks of the job wrote into its directory
    assert seeds == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]

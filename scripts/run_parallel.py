#!/usr/bin/env python
"""Run the shell commands of a file, K at a time, in file order, with an optional wall-clock deadline.

    python scripts/run_parallel.py COMMANDS.txt --jobs 12 [--deadline 480] [--log-dir logs/parallel]

For a machine with more cores than one training uses. (Not a way to fill one GPU with small trainings: 14
of the benchmark's runs side by side on an H200 time-sliced it, docs/benchmark_regime_studies.md "The thing
gap removed".) Each non-empty line of COMMANDS.txt that does not start with ``#`` is one job (run by
``bash -c`` from the current folder); its stdout and stderr go to ``<log-dir>/<NNN>.log``.
Jobs start in file order (put the ones that matter most first); at the deadline the running ones are
killed (their whole process group) and the unstarted ones never start. Writes ``<log-dir>/summary.json``
(per job: command, state done / failed / killed / not started, return code, seconds) and prints one line
per job. Exits 1 if any job did not finish with return code 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def read_commands(path: Path) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"run_parallel.py: {path} is not a file: pass a file of one shell command a line")
    cmds = [ln.strip() for ln in path.read_text().splitlines()]
    cmds = [c for c in cmds if c and not c.startswith("#")]
    if not cmds:
        raise SystemExit(f"run_parallel.py: {path} holds no command (lines starting with # are comments)")
    return cmds


def run(cmds: list[str], jobs: int, deadline: float | None, log_dir: Path) -> list[dict]:
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    state = [{"command": c, "state": "not started", "returncode": None, "seconds": None} for c in cmds]
    running: dict[int, tuple[subprocess.Popen, float, object]] = {}
    nxt = 0

    def over() -> bool:
        return deadline is not None and time.monotonic() - start >= deadline

    def reap() -> None:  # record the jobs that have ended
        for i, (p, t0, log) in list(running.items()):
            if p.poll() is not None:
                state[i].update(state="done" if p.returncode == 0 else "failed", returncode=p.returncode,
                                seconds=round(time.monotonic() - t0, 1))  # fmt: skip
                log.close()
                del running[i]
                print(f"[{time.monotonic() - start:6.0f} s] job {i:03d} {state[i]['state']} "
                      f"({state[i]['seconds']} s): {cmds[i]}", flush=True)  # fmt: skip

    while (nxt < len(cmds) or running) and not over():
        while nxt < len(cmds) and len(running) < jobs:
            log = open(log_dir / f"{nxt:03d}.log", "w")
            log.write(f"$ {cmds[nxt]}\n")
            log.flush()
            p = subprocess.Popen(["bash", "-c", cmds[nxt]], stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
            running[nxt] = (p, time.monotonic(), log)
            state[nxt]["state"] = "running"
            nxt += 1
        time.sleep(1.0)
        reap()
    reap()  # the deadline passed: a job that ended since the last look is not "killed"
    for p, _, _ in running.values():
        os.killpg(p.pid, signal.SIGTERM)
    for i, (p, t0, log) in running.items():
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        state[i].update(state="killed", returncode=p.returncode, seconds=round(time.monotonic() - t0, 1))
        log.close()
    return state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commands", type=Path, help="file with one shell command per line")
    ap.add_argument("--jobs", type=int, default=2, help="jobs at a time (default 2)")
    ap.add_argument("--deadline", type=float, default=None, help="seconds after which the rest is stopped")
    ap.add_argument("--log-dir", type=Path, default=Path("logs/parallel"), help="per-job logs, summary.json")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"run_parallel.py: --jobs must be >= 1, got {args.jobs}")
    state = run(read_commands(args.commands), args.jobs, args.deadline, args.log_dir)
    (args.log_dir / "summary.json").write_text(json.dumps(state, indent=1))
    counts = {s: sum(j["state"] == s for j in state) for s in ("done", "failed", "killed", "not started")}
    print("run_parallel.py: " + ", ".join(f"{n} {s}" for s, n in counts.items()), flush=True)
    return 0 if counts["done"] == len(state) else 1


if __name__ == "__main__":
    sys.exit(main())

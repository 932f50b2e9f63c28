"""scripts/run_parallel.py: K jobs at a time in file order, failures counted, the deadline stops the rest."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scripts.run_parallel import main, read_commands


def _write(tmp_path: Path, lines: list[str]) -> Path:
    f = tmp_path / "commands.txt"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_runs_every_job_and_logs_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmds = _write(tmp_path, ["# a comment", "", f"echo one > {out}.1", f"echo two > {out}.2", "echo three"])
    assert main([str(cmds), "--jobs", "2", "--log-dir", str(tmp_path / "logs")]) == 0
    assert (tmp_path / "out.1").read_text() == "one\n" and (tmp_path / "out.2").read_text() == "two\n"
    summary = json.loads((tmp_path / "logs" / "summary.json").read_text())
    assert [j["state"] for j in summary] == ["done"] * 3
    assert "three" in (tmp_path / "logs" / "002.log").read_text()


def test_a_failed_job_fails_the_run_and_the_others_still_run(tmp_path: Path) -> None:
    cmds = _write(tmp_path, ["exit 3", f"touch {tmp_path}/ran"])
    assert main([str(cmds), "--jobs", "1", "--log-dir", str(tmp_path / "logs")]) == 1
    summary = json.loads((tmp_path / "logs" / "summary.json").read_text())
    assert [(j["state"], j["returncode"]) for j in summary] == [("failed", 3), ("done", 0)]
    assert (tmp_path / "ran").exists()


def test_the_deadline_kills_the_running_and_skips_the_rest(tmp_path: Path) -> None:
    cmds = _write(tmp_path, ["sleep 30", "sleep 30", f"touch {tmp_path}/never"])
    t0 = time.monotonic()
    assert main([str(cmds), "--jobs", "2", "--deadline", "2", "--log-dir", str(tmp_path / "logs")]) == 1
    assert time.monotonic() - t0 < 20
    summary = json.loads((tmp_path / "logs" / "summary.json").read_text())
    assert [j["state"] for j in summary] == ["killed", "killed", "not started"]
    assert not (tmp_path / "never").exists()


def test_bad_input_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="missing.txt is not a file"):
        read_commands(tmp_path / "missing.txt")
    with pytest.raises(SystemExit, match="holds no command"):
        read_commands(_write(tmp_path, ["# only a comment"]))

#!/usr/bin/env python
"""Run, strip and check the notebooks under notebooks/ (nbclient / nbformat, dev dependencies).

    python scripts/notebooks.py run [NOTEBOOK ...] [--save DIR] [--timeout S]
    python scripts/notebooks.py strip [NOTEBOOK ...]     # remove outputs in place (before a commit)
    python scripts/notebooks.py check [NOTEBOOK ...]     # exit 1 if a notebook holds outputs

`run` executes each notebook top to bottom in a fresh kernel, in the notebook's folder, and reports the
time; the notebooks themselves stay untouched (they are kept without outputs in git) unless `--save DIR`
writes the executed copies there. Without arguments every `notebooks/*.ipynb` is used. Notebook parameters
come from environment variables (see the first cell of each notebook).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


def notebooks(paths: list[str] | None = None) -> list[Path]:
    """The given notebooks, or every notebooks/*.ipynb (sorted)."""
    if paths:
        out = [Path(p) for p in paths]
        missing = [str(p) for p in out if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"no such notebook: {', '.join(missing)}")
        return out
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def execute(path: Path, *, timeout: int = 300, kernel_name: str = "python3") -> Any:
    """Execute a notebook in a fresh kernel, working directory = its folder; returns the executed node."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel_name, resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return nb


def outputs_of(nb: Any) -> list[dict]:
    """Every output of every code cell, in order."""
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def stream_text(nb: Any) -> str:
    """All text the code cells printed (stdout / stderr streams and text/plain results)."""
    parts = []
    for o in outputs_of(nb):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif "data" in o and "text/plain" in o["data"]:
            parts.append(
                o["data"]["text/plain"] + "\n"
            )  # a display's repr (e.g. <Figure ...>) on its own line
    return "".join(parts)


def has_outputs(nb: Any) -> bool:
    """True if any code cell holds outputs or an execution count."""
    return any(
        c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None) for c in nb.cells
    )


def strip(path: Path) -> bool:
    """Remove outputs and execution counts in place; returns True if the file changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if not has_outputs(nb):
        return False
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = []
            c.execution_count = None
    nbformat.write(nb, path)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("run", "strip", "check"))
    p.add_argument("notebooks", nargs="*")
    p.add_argument("--save", type=Path, default=None, help="run: write the executed notebooks into DIR")
    p.add_argument("--timeout", type=int, default=300, help="run: seconds per cell")
    args = p.parse_args(argv)
    try:
        paths = notebooks(args.notebooks)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.command == "strip":
        for path in paths:
            print(f"{'stripped' if strip(path) else 'clean   '} {path}")
        return 0
    if args.command == "check":
        import nbformat

        dirty = [path for path in paths if has_outputs(nbformat.read(path, as_version=4))]
        for path in dirty:
            print(f"{path} holds outputs: run `python scripts/notebooks.py strip {path}`", file=sys.stderr)
        return 1 if dirty else 0
    import nbformat

    failed = 0
    for path in paths:
        t0 = time.perf_counter()
        try:
            nb = execute(path, timeout=args.timeout)
        except Exception as e:  # noqa: BLE001 - report every notebook, then fail
            failed += 1
            print(f"FAILED {path} ({time.perf_counter() - t0:.1f} s): {type(e).__name__}: {str(e)[-2000:]}")
            continue
        print(f"ok     {path} ({time.perf_counter() - t0:.1f} s)")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.save / path.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

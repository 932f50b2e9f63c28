"""The code runs on the lowest Python that pyproject.toml supports (issue 16: `scripts/prepare_data.py` used
`datetime.UTC`, new in 3.11, while `requires-python >= 3.10`).

Three checks: ruff lints for that version (`target-version`, so its fixers never suggest a newer API such as
`datetime.UTC`); an AST scan of src/, scripts/, tests/ and the notebooks' code cells for the standard-library
names and syntax that the lowest version lacks; and, where that interpreter is installed (`python3.10` on
the PATH or under pyenv), every file byte-compiled with it (skipped otherwise).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
LOWEST = tuple(int(x) for x in re.search(r'requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', PYPROJECT).groups())

#: (version, module) and (version, module, name) of the standard library, new after 3.10
NEW_MODULES = {(3, 11): {"tomllib", "wsgiref.types"}}
NEW_NAMES = {
    (3, 11): {
        "datetime": {"UTC"},
        "typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "Required",
                   "NotRequired", "Unpack", "TypeVarTuple", "dataclass_transform", "get_overloads",
                   "clear_overloads"},
        "enum": {"StrEnum", "ReprEnum", "EnumCheck", "FlagBoundary", "verify", "member", "nonmember",
                 "global_enum", "show_flag_values"},
        "asyncio": {"TaskGroup", "timeout", "timeout_at", "Runner", "Barrier"},
        "contextlib": {"chdir"},
        "hashlib": {"file_digest"},
        "operator": {"call"},
        "math": {"exp2", "cbrt"},
        "logging": {"getLevelNamesMapping"},
        "inspect": {"getmembers_static"},
        "builtins": {"ExceptionGroup", "BaseExceptionGroup"},
    },
    (3, 12): {
        "typing": {"override", "TypeAliasType", "get_protocol_members", "is_protocol"},
        "itertools": {"batched"},
    },
    (3, 13): {"typing": {"ReadOnly", "TypeIs", "NoDefault"}, "warnings": {"deprecated"}, "copy": {"replace"}},
}  # fmt: skip
NEW_METHODS = {(3, 11): {"add_note"}}  # BaseException.add_note


def _newer(table: dict) -> dict:
    return {v: x for v, x in table.items() if v > LOWEST}


def _sources() -> list[tuple[str, str]]:
    """(name, source) of every Python file and notebook code cell of the project."""
    out = []
    for folder in ("src", "scripts", "tests"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            out.append((str(f.relative_to(ROOT)), f.read_text(encoding="utf-8")))
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                src = "\n".join(
                    "pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines()
                )
                out.append((f"{nb.relative_to(ROOT)} cell {i}", src))
    return out


def newer_api_uses(source: str) -> list[str]:
    """What of `source` needs a Python newer than LOWEST: '<line>: <use> (<version>)'."""
    tree = ast.parse(source)
    modules = {m: v for v, ms in _newer(NEW_MODULES).items() for m in ms}
    names: dict[tuple[str, str], tuple[int, int]] = {}
    for v, table in _newer(NEW_NAMES).items():
        names.update({(m, n): v for m, ns in table.items() for n in ns})
    methods = {n: v for v, ns in _newer(NEW_METHODS).items() for n in ns}
    alias: dict[str, str] = {}  # local name -> module
    found = []

    def hit(node, what, v):
        found.append(f"{node.lineno}: {what} (Python {v[0]}.{v[1]})")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name in modules:
                    hit(node, f"import {a.name}", modules[a.name])
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in modules:
                hit(node, f"from {node.module} import", modules[node.module])
            for a in node.names:
                if (node.module, a.name) in names:
                    hit(node, f"from {node.module} import {a.name}", names[(node.module, a.name)])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = alias.get(node.value.id)
            if module and (module, node.attr) in names:
                hit(node, f"{module}.{node.attr}", names[(module, node.attr)])
        elif isinstance(node, ast.Name) and ("builtins", node.id) in names:
            hit(node, node.id, names[("builtins", node.id)])
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods
        ):
            hit(node, f".{node.func.attr}()", methods[node.func.attr])
        elif type(node).__name__ == "TryStar" and (3, 11) > LOWEST:
            hit(node, "except*", (3, 11))
        elif type(node).__name__ == "TypeAlias" and (3, 12) > LOWEST:
            hit(node, "type X = ...", (3, 12))
    return found


def test_the_scan_finds_what_the_lowest_python_lacks():
    src = (
        "import datetime as _dt\nimport tomllib\nfrom typing import Self\nfrom enum import StrEnum\n"
        "x = _dt.UTC\ny = _dt.timezone.utc\ntry:\n    pass\nexcept* ValueError:\n    pass\n"
        "raise ExceptionGroup('a', [])\n"
    )
    uses = newer_api_uses(src)
    for what in ("import tomllib", "typing import Self", "enum import StrEnum", "datetime.UTC", "except*",
                 "ExceptionGroup"):  # fmt: skip
        assert any(what in u for u in uses), (what, uses)
    assert not any("timezone" in u for u in uses)


def test_no_source_needs_a_newer_python():
    problems = [f"{name}:{use}" for name, src in _sources() for use in newer_api_uses(src)]
    assert not problems, f"needs a Python newer than {LOWEST} (requires-python): {problems}"


def test_ruff_lints_for_the_lowest_python():
    """Ruff's pyupgrade fixers follow target-version: py311 suggested datetime.UTC (UP017)."""
    m = re.search(r'^target-version\s*=\s*"py(\d)(\d+)"', PYPROJECT, flags=re.MULTILINE)
    assert m and (int(m.group(1)), int(m.group(2))) == LOWEST


def _lowest_python() -> str | None:
    """An interpreter of the lowest supported version that runs (a pyenv shim may name one it won't run)."""
    name = f"python{LOWEST[0]}.{LOWEST[1]}"
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{LOWEST[0]}.{LOWEST[1]}*/bin/{name}"))
    for exe in [*reversed(pyenv), shutil.which(name)]:
        if exe and subprocess.run([str(exe), "-c", "pass"], capture_output=True, timeout=30).returncode == 0:
            return str(exe)
    return None


def test_every_file_compiles_on_the_lowest_python():
    exe = _lowest_python()
    if exe is None:
        pytest.skip(f"no working python{LOWEST[0]}.{LOWEST[1]} (PATH, pyenv)")
    files = [str(f) for folder in ("src", "scripts", "tests") for f in sorted((ROOT / folder).rglob("*.py"))]
    code = (
        "import sys\nbad = []\nfor f in sys.stdin.read().split('\\n'):\n"
        "    try:\n        compile(open(f, encoding='utf-8').read(), f, 'exec')\n"
        "    except SyntaxError as e:\n        bad.append(f'{f}:{e.lineno}: {e.msg}')\n"
        "print('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([exe, "-I", "-c", code], input="\n".join(files), capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, f"syntax the lowest Python lacks:\n{r.stdout}{r.stderr}"

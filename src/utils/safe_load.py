"""Loading user files without running their code: weights-only torch files and checked checkpoint configs.

A checkpoint is read with ``torch.load(weights_only=True)`` (tensors and plain data only; a pickled Python
object is refused), but its stored config (``hyper_parameters.cfg``) is then *instantiated*: every
``_target_`` in it is imported and called by Hydra, and ``uda.module`` is imported as a class. So a
checkpoint's config may only name what the library itself names at that key: before anything of it is
instantiated or imported, :func:`check_checkpoint_config` compares every ``_target_`` (at any depth,
lists, ``_args_`` and ``_partial_`` nodes included) and ``uda.module`` with an allow-list built from the
repo's own configs, and refuses anything else with one line naming the key and the target.

The allow-list (:func:`allow_list`) is read from ``conf/**/*.yaml``: each file lands at its Hydra package
(the group's path, e.g. ``conf/uda/pseudo/dacs.yaml`` -> ``uda.pseudo``, or its ``# @package`` header;
``_global_`` -> the root; a group that a defaults list places elsewhere, ``- /uda/augment@augment: dacs`` in
``conf/uda/mix/classmix.yaml``, is allowed at that place too, ``uda.mix.augment``), and every ``_target_``
value (and ``uda.module`` value) it holds is allowed at
that key path (list indices as ``[]``). A node that is an interpolation of another node (``dataset:
${data.source}``) allows what that node allows. So a config file added to ``conf/`` is allowed at once,
and a checkpoint of any composition of the library's configs passes; a target that is the library's own
but belongs to another key (a mixer named as the pseudo-labeller) does not.

The run's own extras are the exception: ``callbacks`` and ``logger`` (:data:`RUN_ONLY_SECTIONS`) hold what
the training process that wrote the checkpoint ran with, and a run may add its own there
(``+callbacks.<name>._target_=...``, as tests/probes.py does). No loader builds them from a checkpoint
(``src.eval`` and ``src.predict`` make their own trainer, without callbacks or loggers; a resumed run builds
its own from its command line), so their targets are not checked, and a run's extra callback does not make
its checkpoints unloadable; their interpolations are refused like any other.

Interpolations: a checkpoint stores its config resolved (``OmegaConf.to_container(resolve=True)``), so a
genuine one holds no ``${...}``. Hydra's ``instantiate`` resolves a config before it builds it, and
resolvers can create nodes (``${oc.create:'{_target_: builtins.open, ...}'}`` is a target that no check of
the stored strings sees, and Hydra calls it) or read the environment (``oc.env``) and files
(``udass.class_names``); a string holding ``${`` is therefore refused too. Hydra's ``_args_``,
``_convert_``, ``_recursive_`` and ``_partial_`` only shape a call to an allowed target.

Every ``torch.load`` of a user file goes through :func:`load_weights_file` (checkpoints,
``model.pretrained``, ``uda.teacher.checkpoint``): a file that needs unpickling is refused in one line naming
it, never with torch's advice to retry with ``weights_only=False``.
"""

from __future__ import annotations

import functools
import pickle
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

#: the keys whose values are imported: every `_target_`, and the module class of a method
TARGET_KEY = "_target_"
MODULE_SLOT = "uda.module"
#: sections of a stored config that no loader builds (the writing run's own callbacks and loggers)
RUN_ONLY_SECTIONS = ("callbacks", "logger")

_INTERPOLATION = re.compile(r"^\$\{\s*(\.*)([A-Za-z_][\w.]*)?\s*\}$")
_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)")


class UnsafeCheckpointError(ValueError):
    """A checkpoint's config names code the library does not define for that key (or an interpolation)."""


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


class AllowList:
    """Key path (list indices as ``[]``) -> the targets the library's configs name there."""

    def __init__(self, targets: dict[str, set[str]], aliases: dict[str, set[str]]) -> None:
        self.targets = {k: frozenset(v) for k, v in targets.items()}
        # node path -> the node paths it stands for: what it interpolates (`${data.source}`), or the default
        # package of a config group that a defaults list places there (`/uda/augment@augment`)
        self.aliases = {k: frozenset(v) for k, v in aliases.items()}

    def allowed(self, slot: str, _depth: int = 0) -> frozenset[str]:
        out = set(self.targets.get(slot, ()))
        if _depth < 8:
            for alias, origins in self.aliases.items():
                if slot.startswith(alias + "."):
                    for origin in origins:
                        out |= self.allowed(origin + slot[len(alias) :], _depth + 1)
        return frozenset(out)

    def all_targets(self) -> frozenset[str]:
        return frozenset().union(*self.targets.values()) if self.targets else frozenset()


def _group(path: Path, conf_dir: Path) -> str:
    """A config file's group as a dotted path (its folder under conf/), its default package."""
    return ".".join(path.relative_to(conf_dir).parent.parts)


def _package(path: Path, conf_dir: Path) -> str:
    """The Hydra package of a config file: its `# @package` header, else its group's path."""
    default = _group(path, conf_dir)
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            m = _PACKAGE_HEADER.match(line)
            if m:
                pkg = m.group(1)
                return "" if pkg == "_global_" else default if pkg == "_group_" else pkg
    return default


def _placements(defaults: Any, package: str, group: str, aliases: dict[str, set[str]]) -> None:
    """A defaults list's ``[override] [/]group@pkg: option`` entries: the group's configs land at ``pkg``
    (relative to the file's ``package``; ``_global_.`` absolute, ``_here_`` the file's own), not at the
    group's path, so that place allows what the group's files name. A group without a leading ``/`` is
    relative to the file's own ``group`` (its folder)."""
    for entry in defaults if isinstance(defaults, list) else ():
        if not isinstance(entry, Mapping):
            continue
        for key in entry:
            name, sep, pkg = (s.strip() for s in str(key).removeprefix("override ").partition("@"))
            if not sep:
                continue
            if pkg.startswith("_global_"):
                place = pkg.removeprefix("_global_").lstrip(".")
            elif pkg == "_here_":
                place = package
            else:
                place = _join(package, pkg)
            origin = ".".join(p for p in name.split("/") if p)
            if not name.startswith("/"):
                origin = _join(group, origin)
            aliases.setdefault(place, set()).add(origin)


def _collect(node: Any, path: str, targets: dict[str, set[str]], aliases: dict[str, set[str]]) -> None:
    if isinstance(node, Mapping):
        for k, v in node.items():
            if path == "" and k == "defaults":  # Hydra's defaults list, not config
                continue
            p = _join(path, str(k))
            if (k == TARGET_KEY or p == MODULE_SLOT) and isinstance(v, str):
                targets.setdefault(p, set()).add(v)
            _collect(v, p, targets, aliases)
    elif isinstance(node, list):
        for v in node:
            _collect(v, f"{path}[]", targets, aliases)
    elif isinstance(node, str):
        m = _INTERPOLATION.match(node)
        if m and m.group(2):
            dots, ref = m.group(1), m.group(2)
            if dots:  # relative: `.x` is a sibling, each further dot one level up
                base = path.split(".")[: -len(dots)] if "." in path else []
                ref = ".".join([*base, ref])
            aliases.setdefault(path, set()).add(ref)


@functools.lru_cache(maxsize=4)
def allow_list(conf_dir: str | Path = CONF_DIR) -> AllowList:
    """The targets the library's configs define, by key path (read once from ``conf/**/*.yaml``)."""
    conf_dir = Path(conf_dir)
    files = sorted(conf_dir.rglob("*.yaml"))
    if not files:
        raise FileNotFoundError(
            f"{conf_dir} holds no config: the library's conf/ folder is needed to check what a checkpoint "
            f"may name (run from a checkout or an editable install, pip install -e .)"
        )
    targets: dict[str, set[str]] = {}
    aliases: dict[str, set[str]] = {}
    for f in files:
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            where = f" (line {line + 1})" if line is not None else ""
            raise ValueError(f"{f}{where} is not valid YAML: {getattr(e, 'problem', e)}") from e
        package = _package(f, conf_dir)
        if isinstance(data, Mapping):
            _placements(data.get("defaults"), package, _group(f, conf_dir), aliases)
        _collect(data, package, targets, aliases)
    return AllowList(targets, aliases)


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted path with list indices, slot with `[]`, value) of every node of a plain config, containers
    included (the root excluded)."""
    if path:
        yield path, re.sub(r"\[\d+\]", "[]", path), node
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _walk(v, _join(path, str(k)))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _short(value: Any, limit: int = 80) -> str:
    s = value if isinstance(value, str) else repr(value)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def check_checkpoint_config(cfg: Any, source: str | Path) -> None:
    """Refuse (one line, :class:`UnsafeCheckpointError`) a checkpoint config that names a target or module
    class the library does not define at that key (outside :data:`RUN_ONLY_SECTIONS`), or holds an
    interpolation; see the module docstring."""
    if not isinstance(cfg, Mapping):
        raise UnsafeCheckpointError(
            f"checkpoint {source}: hyper_parameters.cfg is a {type(cfg).__name__}, not a config mapping; "
            f"refusing to load (not a checkpoint of this library)"
        )
    allow = allow_list()
    uda = cfg.get("uda")
    if isinstance(uda, Mapping) and uda.get("module") is not None:
        _check_target(MODULE_SLOT, MODULE_SLOT, uda["module"], allow, source)
    for path, slot, value in _walk(cfg):
        run_only = path.split(".", 1)[0].split("[", 1)[0] in RUN_ONLY_SECTIONS
        if path.rsplit(".", 1)[-1] == TARGET_KEY and not run_only:
            _check_target(path, slot, value, allow, source)
        elif path != MODULE_SLOT and isinstance(value, str) and "${" in value:
            raise UnsafeCheckpointError(
                f"checkpoint {source}: {path} = {_short(value)} is an interpolation, but a checkpoint "
                f"stores its config resolved; refusing to load (an edited checkpoint: resolvers can run code)"
            )


def _check_target(path: str, slot: str, value: Any, allow: AllowList, source: str | Path) -> None:
    if not (isinstance(value, str) and value in allow.allowed(slot)):
        raise UnsafeCheckpointError(
            f"checkpoint {source}: {path} = {_short(value)} is not a target this library defines for that "
            f"key; refusing to load (a checkpoint may only name the library's own classes)"
        )


def _pickled_object(path: str | Path, e: BaseException) -> bool:
    """Whether a refused weights-only load was a pickle of Python objects (a global torch does not allow,
    or a pickle stream: a torch zip archive or a protocol >= 2 header) rather than bytes of anything else."""
    if "Unsupported global" in str(e):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith((b"\x80", b"PK\x03\x04"))


def _unpickling_detail(e: BaseException) -> str:
    m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
    return f" ({m.group(1)})" if m else ""


def load_weights_file(
    path: str | Path, what: str = "", *, map_location: Any = "cpu", mmap: bool = False,
    expected: str = "a file written by torch.save",
) -> Any:  # fmt: skip
    """``torch.load(path, weights_only=True)`` with one readable line naming ``what`` (e.g.
    ``model.pretrained=``) and the file when it fails; a file that needs unpickling is refused as not a
    plain tensor checkpoint (never with torch's hint to load it with ``weights_only=False``)."""
    try:
        with warnings.catch_warnings():
            # a plain pickle: torch warns about its protocol before refusing it; the one line below says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if not _pickled_object(path, e):  # not a pickle at all: a damaged or foreign file
            raise ValueError(
                f"{what}{path} is not a loadable checkpoint (damaged, or not written by torch.save); "
                f"give {expected}"
            ) from e
        raise ValueError(
            f"{what}{path} is not a plain tensor checkpoint: it holds a pickled Python object"
            f"{_unpickling_detail(e)}, and this library only reads tensors and plain data (unpickling "
            f"could run code); save the weights as a state dict, torch.save(model.state_dict(), path)"
        ) from e
    except Exception as e:  # noqa: BLE001 - a truncated / foreign file: one readable line
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        if "weights_only" in first:  # never pass on torch's advice to unpickle
            first = ""
        detail = f"damaged, or not written by torch.save: {type(e).__name__}" + (f" {first}" if first else "")
        raise ValueError(f"{what}{path} is not a loadable checkpoint ({detail}); give {expected}") from e


def checkpoint_config(ckpt: Any) -> Any:
    """The stored config of a loaded checkpoint (``hyper_parameters.cfg``), or None."""
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    return hp.get("cfg") if isinstance(hp, Mapping) else None

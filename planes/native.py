"""The compiled hot path: which modules mypyc builds, and whether this process runs them.

``setup.py`` compiles the modules in ``MODULES`` with mypyc when the project is installed (unless
``PLANES_NATIVE=0`` is set for the build, or mypyc or a C compiler is missing) and writes
``planes/_native.json``: a digest of each module's source as it was compiled. The compiled
extension sits beside its ``.py`` file and Python would import it first, so ``planes/__init__``
calls ``guard()`` before any of them is imported:

* every module compiled from the source that is on disk now: the extensions are used;
* ``PLANES_NATIVE=0`` in the environment, no build, a module missing, or a source changed
  since it was compiled (an edit in a checkout, a ``git pull``): all of them are imported from
  their ``.py`` files instead (they are compiled as one group, so it is all or none), and
  ``status()`` says why. The code is the same either way; only its speed differs.

The modules are the per-bar path of a backtest (see ``docs/performance.md``). Not on the list,
on purpose: ``planes/busparts.py`` (compiled, the async-handler adapter crashed the garbage
collector), ``planes/execution/adapter.py`` (cattrs cannot read the field types of an attrs
class compiled in it) and ``cli/backtest.py`` (mypyc rejects its attrs class bodies).

This module imports only the standard library: ``setup.py`` reads ``MODULES`` from it.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

MODULES: tuple[str, ...] = (
    "planes.bus",
    "planes.clock",
    "planes.indicators",
    "planes.market.replay",
    "planes.strategy.builtin",
    "planes.strategy.manager",
    "planes.risk.manager",
    "planes.execution.ledger",
    "planes.execution.paper",
    "planes.execution.positions",
    "planes.observability.status",
)
"""Compiled together, in one mypyc group (``GROUP``)."""

GROUP = "planes._compiled"
MANIFEST = "_native.json"
ENV = "PLANES_NATIVE"
PACKAGES = ("contracts", "planes", "plugins", "research", "cli")
"""Where a compiled module of ours can sit (``stray`` looks through them)."""


class NativeStatus(NamedTuple):
    """Whether the compiled modules are in use, and if not, why."""

    compiled: bool
    reason: str
    modules: tuple[str, ...] = MODULES

    def describe(self) -> str:
        """One line for logs and reports: ``compiled (N modules, mypyc)`` or why not."""
        if self.compiled:
            return f"compiled ({len(self.modules)} modules, mypyc)"
        return f"interpreted: {self.reason}"


def source_digest(path: Path) -> str:
    """The digest ``setup.py`` records for a module's source and ``guard`` compares."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def module_source(root: Path, name: str) -> Path:
    """``root/planes/market/replay.py`` for ``planes.market.replay``."""
    return root.joinpath(*name.split(".")).with_suffix(".py")


def _extension(source: Path) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def stray(root: Path, modules: Sequence[str] = MODULES) -> dict[str, Path]:
    """Extensions under ``root`` beside a source but not in ``modules``, by module name.

    Left by a build whose list was longer (an editable install compiles into the checkout):
    Python would import one ahead of its source, so ``guard`` sends these to their sources
    too, and an in-place build deletes them.
    """
    found: dict[str, Path] = {}
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for package in PACKAGES:
        for folder, _, files in os.walk(root / package):
            for file in files:
                suffix = next((s for s in suffixes if file.endswith(s)), None)
                if suffix is None:
                    continue
                source = Path(folder) / (file.removesuffix(suffix) + ".py")
                name = ".".join(source.relative_to(root).with_suffix("").parts)
                if name not in modules and source.is_file():
                    found[name] = Path(folder) / file
    return found


def check(root: Path, modules: Sequence[str] = MODULES, env: str | None = None) -> NativeStatus:
    """Decide, without importing anything, whether the extensions under ``root`` may be used."""
    if env == "0":
        return NativeStatus(compiled=False, reason=f"{ENV}=0 is set", modules=tuple(modules))
    sources = {name: module_source(root, name) for name in modules}
    built = [name for name, source in sources.items() if _extension(source) is not None]
    manifest_path = root / "planes" / MANIFEST
    if not built:
        return NativeStatus(compiled=False, reason="not built", modules=tuple(modules))
    try:
        recorded = json.loads(manifest_path.read_text(encoding="utf-8"))["modules"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        recorded = exc
    if not isinstance(recorded, dict):
        reason = f"{manifest_path} cannot be read ({recorded!r}): rebuild (make, or pip install)"
        return NativeStatus(compiled=False, reason=reason, modules=tuple(modules))
    missing = [name for name in modules if name not in built]
    if missing:
        reason = f"not compiled: {', '.join(missing)}"
        return NativeStatus(compiled=False, reason=reason, modules=tuple(modules))
    changed = [name for name, path in sources.items() if recorded.get(name) != source_digest(path)]
    if changed:
        reason = f"changed since compiled: {', '.join(changed)} (rebuild: make, or pip install)"
        return NativeStatus(compiled=False, reason=reason, modules=tuple(modules))
    return NativeStatus(compiled=True, reason="", modules=tuple(modules))


class _SourceFinder:
    """Imports the listed modules from their ``.py`` files, ahead of the extensions.

    A meta path finder (``importlib.abc.MetaPathFinder``'s one method, without importing it).
    """

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


_status: NativeStatus | None = None


def guard() -> NativeStatus:
    """Run once from ``planes/__init__``: route the modules to their sources unless compiled."""
    global _status  # noqa: PLW0603 - one decision per process
    if _status is not None:
        return _status
    root = Path(__file__).resolve().parent.parent
    status = check(root, MODULES, os.environ.get(ENV))
    routed = [] if status.compiled else list(MODULES)
    routed += stray(root)
    if not status.compiled:
        early = [name for name in MODULES if name in sys.modules]
        if early:  # imported before the guard ran: nothing to do but say so
            reason = f"{status.reason}; already imported: {', '.join(early)}"
            status = NativeStatus(compiled=False, reason=reason)
    if routed:
        sources = {name: module_source(root, name) for name in routed}
        sys.meta_path.insert(0, _SourceFinder(sources))
    _status = status
    return status


def status() -> NativeStatus:
    """What ``guard`` decided for this process; after the modules are imported, what they are."""
    decided = guard()
    loaded = [sys.modules[name] for name in MODULES if name in sys.modules]
    interpreted = [m.__name__ for m in loaded if str(getattr(m, "__file__", "")).endswith(".py")]
    if decided.compiled and interpreted:
        return NativeStatus(compiled=False, reason=f"imported from source: {interpreted}")
    return decided

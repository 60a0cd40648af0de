"""Plugin discovery and the catalog of what plugins provide.

Plugins come from three places, loaded in this order: the built-in list (``plugins.builtin``),
the ``planes`` entry-point group of installed distributions, and ``plugins.modules`` in config
(``pkg.mod``, ``pkg.mod:attr``, or ``name = pkg.mod:attr`` to give the plugin a short name for
``plugins.disabled``, ``plugins.optional`` and ``[plugins.settings.<name>]``).
``plugins.disabled`` leaves any of them out by name. A plugin that fails to import, or raises in
a hook, fails start-up with a ``PluginError`` naming it and the cause, unless
``plugins.optional`` names it: then it is logged and skipped whole.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import os
import sys
import time
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import attrs
import pluggy
import structlog

from contracts.ports import ExchangeSpec, NotifierSpec, PlaneSpec, StrategySpec
from contracts.topics import Topic
from plugins import hookspecs

ENTRY_POINT_GROUP = "planes"
BUILTIN = "builtin"
ENTRY_POINT = "entry point"
CONFIG = "config"

log = structlog.get_logger("planes.plugins")
T = TypeVar("T")


class PluginError(RuntimeError):
    """A plugin could not be loaded or failed in a hook; the message names it."""


class _BadResultError(ValueError):
    """A registration hook returned something that is not a list of its spec type."""


@attrs.define
class PluginRecord:
    """One plugin: where it came from, its version, what it provided, whether it loaded."""

    name: str
    origin: str
    version: str
    target: str
    status: str = "loaded"
    error: str = ""
    provides: dict[str, list[str]] = attrs.field(factory=dict)


@attrs.frozen
class Owned(Generic[T]):
    """Something a plugin provided, with the plugin's name."""

    owner: str
    item: T


@attrs.define
class Catalog:
    """Everything the loaded plugins provided, each item with its owner."""

    topics: list[Owned[Topic[Any]]] = attrs.field(factory=list)
    planes: list[Owned[PlaneSpec]] = attrs.field(factory=list)
    exchanges: dict[str, Owned[ExchangeSpec]] = attrs.field(factory=dict)
    strategies: dict[str, Owned[StrategySpec]] = attrs.field(factory=dict)
    notifiers: dict[str, Owned[NotifierSpec]] = attrs.field(factory=dict)


_HOOKS: tuple[tuple[str, str, type], ...] = (
    ("planes_register_topics", "topics", Topic),
    ("planes_register_planes", "planes", PlaneSpec),
    ("planes_register_exchanges", "exchanges", ExchangeSpec),
    ("planes_register_strategies", "strategies", StrategySpec),
    ("planes_register_notifiers", "notifiers", NotifierSpec),
)


def _distribution_version() -> str:
    try:
        return importlib.metadata.version("planes-bot")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _version_of(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.version if ep.dist is not None else "?"


_Stamp = tuple[tuple[str, int], ...]


class Installed(NamedTuple):
    """What the installed distributions say: this project's version, the ``planes`` plugins."""

    version: str
    entry_points: tuple[tuple[importlib.metadata.EntryPoint, str], ...]
    """``(entry point, its distribution's version)`` of the ``planes`` group."""


_installed: tuple[_Stamp, Installed] | None = None


def _path_stamp() -> _Stamp:
    """Each ``sys.path`` entry with its modification time (-1: not there).

    Installing, upgrading or removing a distribution adds or removes its ``*.dist-info``
    directory in a ``sys.path`` directory, and so changes that directory's time.
    """
    stamp = []
    for entry in sys.path:
        try:
            stamp.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            stamp.append((entry, -1))
    return tuple(stamp)


_SETTLED_NS = 1_000_000_000
"""A directory changed less than this long ago may change again within the same tick of the file
system's clock (a few milliseconds) and keep its time: an answer read then is not kept."""


def installed() -> Installed:
    """The project's version and the installed ``planes`` entry points, read once per change.

    Reading every distribution's metadata takes milliseconds (a file per distribution), which a
    process that assembles many runtimes (a parameter sweep of backtests) paid every time; the
    answer is kept until ``sys.path`` or a directory on it changes, and only once each of those
    directories is ``_SETTLED_NS`` old. An ``entry_points.txt`` edited in place, without a
    reinstall, is seen by the next process.
    """
    global _installed  # noqa: PLW0603 - the one cache of this module
    stamp = _path_stamp()
    if _installed is not None and _installed[0] == stamp:
        return _installed[1]
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    pairs = tuple((ep, _version_of(ep)) for ep in found)
    answer = Installed(_distribution_version(), pairs)
    settled = time.time_ns() - _SETTLED_NS
    _installed = (stamp, answer) if all(mtime < settled for _, mtime in stamp) else None
    return answer


def _import_target(target: str) -> object:
    module_name, _, attr = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def _config_entry(entry: str) -> tuple[str, str]:
    """``"name = pkg.mod:attr"`` names a config plugin; a bare target is its own name."""
    name, sep, target = entry.partition("=")
    if not sep:
        return entry.strip(), entry.strip()
    return name.strip(), target.strip()


def _as_plugin(obj: object) -> object:
    """Modules and instances register as they are; a class is instantiated with no arguments."""
    return obj() if inspect.isclass(obj) else obj


_IMPL_MARK = f"{hookspecs.PROJECT}_impl"
"""The attribute pluggy's ``HookimplMarker`` puts on a hook implementation."""


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, quicker to register a module: most of a module's names are imports.

    pluggy looks at every name of a plugin with ``inspect.getattr_static``; a module attribute
    that is not a function or method carrying the hook mark cannot be a hook implementation, so
    it is passed over at once. Everything else gets pluggy's own look.
    """

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if type(plugin) is types.ModuleType:
            value = plugin.__dict__.get(name)
            if not isinstance(value, types.FunctionType | types.MethodType) or not hasattr(
                value, _IMPL_MARK
            ):
                return None
        return super().parse_hookimpl_opts(plugin, name)


class PluginHost:
    """Loads plugins into a pluggy ``PluginManager`` and collects what they provide."""

    def __init__(
        self,
        *,
        builtin: Sequence[tuple[str, str]] = (),
        entry_points: bool = True,
        modules: Sequence[str] = (),
        disabled: Iterable[str] = (),
        optional: Iterable[str] = (),
        entry_point_source: Callable[[], Iterable[importlib.metadata.EntryPoint]] | None = None,
    ) -> None:
        self.pm = _PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self._builtin = builtin
        self._entry_points = entry_points
        self._modules = modules
        self._disabled = set(disabled)
        self._optional = set(optional)
        self._entry_point_source = entry_point_source

    def record(self, name: str) -> PluginRecord:
        """The record of the plugin called ``name``."""
        for rec in self.records:
            if rec.name == name:
                return rec
        raise KeyError(name)

    def load(self) -> None:
        """Import and register every plugin; see the module docstring for order and failures."""
        found = installed()
        for name, target in self._builtin:
            self._load(
                name, BUILTIN, found.version, target, functools.partial(_import_target, target)
            )
        if self._entry_points:
            source = self._entry_point_source
            pairs = found.entry_points
            if source is not None:
                pairs = tuple((ep, _version_of(ep)) for ep in source())
            for ep, dist_version in sorted(pairs, key=lambda pair: pair[0].name):
                self._load(ep.name, ENTRY_POINT, dist_version, ep.value, ep.load)
        for entry in self._modules:
            name, target = _config_entry(entry)
            version = self._module_version(target)
            self._load(name, CONFIG, version, target, functools.partial(_import_target, target))
        unknown = self._disabled - {rec.name for rec in self.records}
        if unknown:
            log.warning("plugins.disabled_unknown", names=sorted(unknown))
        self.pm.check_pending()

    @staticmethod
    def _module_version(target: str) -> str:
        top = target.partition(":")[0].split(".")[0]
        for dist in importlib.metadata.packages_distributions().get(top, []):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "-"

    def _load(
        self, name: str, origin: str, version: str, target: str, loader: Callable[[], object]
    ) -> None:
        record = PluginRecord(name=name, origin=origin, version=version, target=target)
        self.records.append(record)
        if name in self._disabled:
            record.status = "disabled"
            return
        if self.pm.has_plugin(name):
            other = next(r for r in self.records if r.name == name and r is not record)
            self._fail(
                record, f"the name is already taken by the {other.origin} plugin", registered=False
            )
            return
        try:
            plugin = _as_plugin(loader())
            self.pm.register(plugin, name=name)
            self.pm.check_pending()  # an unknown hook name (a typo) is this plugin's failure
        except Exception as exc:  # noqa: BLE001 - any import-time failure is reported by name
            self._fail(record, f"failed to load {target!r}: {type(exc).__name__}: {exc}")

    def _fail(self, record: PluginRecord, reason: str, *, registered: bool = True) -> None:
        record.error = reason
        if record.name in self._optional:
            record.status = "skipped"
            log.warning("plugins.skipped", plugin=record.name, origin=record.origin, reason=reason)
            if registered and self.pm.has_plugin(record.name):
                self.pm.unregister(name=record.name)
            return
        record.status = "failed"
        msg = f"plugin {record.name!r} ({record.origin}) {reason}"
        raise PluginError(msg)

    def collect(self) -> Catalog:
        """Call every registration hook, plugin by plugin, and gather the results.

        Results are checked (right spec type, no duplicate names); a plugin that raises or
        returns something wrong fails start-up, or is dropped whole when optional.
        """
        per_plugin: dict[str, dict[str, list[Any]]] = {}
        order = [rec.name for rec in self.records if rec.status == "loaded"]
        for hook_name, kind, spec_type in _HOOKS:
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                name = impl.plugin_name
                if name in per_plugin and per_plugin[name].get("__failed__"):
                    continue
                try:
                    result = impl.function()
                    items = self._check_result(hook_name, spec_type, result)
                except _BadResultError as exc:
                    reason = str(exc)
                except Exception as exc:  # noqa: BLE001 - a raising hook is reported by plugin
                    reason = f"raised in {hook_name}: {type(exc).__name__}: {exc}"
                else:
                    per_plugin.setdefault(name, {}).setdefault(kind, []).extend(items)
                    continue
                self._fail(self.record(name), reason)
                per_plugin.setdefault(name, {})["__failed__"] = [True]
        catalog = Catalog()
        for name in order:
            provided = per_plugin.get(name, {})
            if provided.get("__failed__"):
                continue
            record = self.record(name)
            for _, kind, _ in _HOOKS:
                for item in provided.get(kind, []):
                    self._add(catalog, kind, name, item)
                    label = getattr(item, "name", None)  # str(item) only without one: a repr
                    record.provides.setdefault(kind, []).append(
                        str(item) if label is None else label
                    )
        return catalog

    @staticmethod
    def _check_result(hook_name: str, spec_type: type, result: object) -> list[Any]:
        if result is None:
            return []
        if isinstance(result, str | bytes) or not isinstance(result, Sequence):
            msg = (
                f"{hook_name} must return a list of {spec_type.__name__}, "
                f"got {type(result).__name__}"
            )
            raise _BadResultError(msg)
        for item in result:
            if not isinstance(item, spec_type):
                msg = f"{hook_name} returned {item!r}, which is not a {spec_type.__name__}"
                raise _BadResultError(msg)
        return list(result)

    @staticmethod
    def _add(catalog: Catalog, kind: str, owner: str, item: Any) -> None:
        if kind == "topics":
            catalog.topics.append(Owned(owner, item))
            return
        if kind == "planes":
            catalog.planes.append(Owned(owner, item))
            return
        registry: dict[str, Owned[Any]] = getattr(catalog, kind)
        known = registry.get(item.name)
        if known is not None:
            singular = {"strategies": "strategy"}.get(kind, kind.removesuffix("s"))
            msg = (
                f"{singular} {item.name!r} from plugin {owner!r} clashes with the one "
                f"from plugin {known.owner!r}"
            )
            raise PluginError(msg)
        registry[item.name] = Owned(owner, item)

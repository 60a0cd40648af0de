"""StateHub: the stateful components of one runtime, as the storage plane sees them.

State is not an event: a snapshot copies what the PositionManager, the venues and the
StrategyManager hold, and a restart hands it back. The runtime (the composition root, which
builds every component) registers each component that implements ``contracts.ports.Stateful``
here, and gives the hub to the storage plane through its context. That is the one path between
planes that does not go through the bus, and it carries nothing but snapshots and journaled
events being replayed; the hub never calls a component while the bus is dispatching.

A topic is replayed in one of two ways: whole payloads to ``replay_event``, or, when every
component that rebuilds state from it names the same view (``contracts.ports.ViewReplaying``),
views and a payload loader to ``replay_view`` (``views`` says which topics, and with what).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import structlog

from contracts.ports import Reconciling, Stateful, ViewReplaying

log = structlog.get_logger("planes.state")


class StateError(RuntimeError):
    """A component failed to export, restore, replay or finish its state; the message names it."""


def replay_failed(key: str, topic: str, exc: Exception) -> StateError:
    """The error of a component (``key``) that failed to replay an event of ``topic``."""
    return StateError(f"state {key!r}: replay of {topic} failed: {type(exc).__name__}: {exc}")


class StateHub:
    """The ``Stateful`` components of a runtime, by ``state_key``."""

    def __init__(self) -> None:
        self._parts: dict[str, Stateful] = {}
        self._venues: list[tuple[str, Reconciling]] = []
        self._routes: dict[str, tuple[Stateful, ...]] = {}
        self._views: dict[str, type] = {}
        self._named: dict[str, Mapping[str, type]] = {}
        """The views each component (by state key) names for its topics: ``replay_views``."""

    def add(self, component: object, name: str) -> None:
        """Register ``component`` if it is ``Stateful`` and/or ``Reconciling``."""
        if isinstance(component, Stateful):
            key = component.state_key
            if key in self._parts:
                msg = f"two components share the state key {key!r} ({name} and another)"
                raise StateError(msg)
            self._parts[key] = component
            # Asked once: a runtime-checkable protocol's isinstance is slow (it lists the
            # protocol's members every time), and a runtime adds a dozen components.
            named = component.replay_views if isinstance(component, ViewReplaying) else {}
            self._named[key] = named
            for topic in component.state_topics:
                self._routes[topic] = (*self._routes.get(topic, ()), component)
            self._views = self._find_views()
        if isinstance(component, Reconciling):
            self._venues.append((name, component))

    @property
    def keys(self) -> list[str]:
        """The registered state keys, in registration order."""
        return list(self._parts)

    @property
    def topics(self) -> frozenset[str]:
        """Every topic some component rebuilds its state from."""
        return frozenset(self._routes)

    @property
    def views(self) -> Mapping[str, type]:
        """The topics replayed through ``replay_view``, each with the view its components named.

        A topic is here when every component replaying it names the same view class for it; the
        others (and any topic of a component without views) get whole payloads.
        """
        return self._views

    def _find_views(self) -> dict[str, type]:
        views: dict[str, type] = {}
        for topic, parts in self._routes.items():
            named = {self._named[part.state_key].get(topic) for part in parts}
            view = named.pop()
            if view is not None and not named:
                views[topic] = view
        return views

    def export(self) -> dict[str, Any]:
        """Every component's state by key (JSON-able)."""
        sections: dict[str, Any] = {}
        for key, part in self._parts.items():
            try:
                sections[key] = part.export_state()
            except Exception as exc:
                raise StateError(
                    f"state {key!r}: export failed: {type(exc).__name__}: {exc}"
                ) from exc
        return sections

    def restore(self, sections: Mapping[str, Any]) -> list[str]:
        """Hand each component its section; return the keys the snapshot did not hold."""
        missing: list[str] = []
        for key, part in self._parts.items():
            if key not in sections:
                missing.append(key)
                continue
            try:
                part.restore_state(sections[key])
            except Exception as exc:
                raise StateError(
                    f"state {key!r}: restore failed: {type(exc).__name__}: {exc}"
                ) from exc
        return missing

    def replay(self, topic: str, payload: Any) -> None:
        """Give one journaled event to every component that rebuilds state from ``topic``."""
        for part in self._routes.get(topic, ()):
            try:
                part.replay_event(topic, payload)
            except Exception as exc:
                raise replay_failed(part.state_key, topic, exc) from exc

    def replay_view(self, topic: str, view: Any, load: Callable[[], Any]) -> None:
        """Give one journaled event's view (a ``views[topic]``) and its loader to its components."""
        for part in self._routes.get(topic, ()):
            try:
                cast(ViewReplaying, part).replay_view(topic, view, load)
            except Exception as exc:
                raise replay_failed(part.state_key, topic, exc) from exc

    def view_replayers(
        self, topic: str
    ) -> tuple[tuple[str, Callable[[str, Any, Callable[[], Any]], None]], ...]:
        """``(state_key, replay_view)`` of each component replaying ``topic`` from views.

        For a caller that dispatches a whole journal itself (one call per component and event,
        not two); it must wrap a failure as ``replay_view`` does, naming the state key.
        """
        if topic not in self._views:
            return ()
        return tuple(
            (part.state_key, cast(ViewReplaying, part).replay_view)
            for part in self._routes.get(topic, ())
        )

    def recovered(self) -> None:
        """Tell every component that recovery is complete."""
        for key, part in self._parts.items():
            try:
                part.recovered()
            except Exception as exc:
                what = f"{type(exc).__name__}: {exc}"
                raise StateError(f"state {key!r}: recovered() failed: {what}") from exc

    async def reconcile(self, policy: str) -> list[str]:
        """Reconcile every venue that can; one line per action, prefixed with the venue."""
        lines: list[str] = []
        for name, venue in self._venues:
            try:
                lines.extend(f"{name}: {line}" for line in await venue.reconcile(policy))
            except Exception as exc:
                log.exception("state.reconcile_failed", venue=name)
                lines.append(f"{name}: reconciliation failed: {type(exc).__name__}: {exc}")
        return lines

"""Publish rights: which plane may publish which topic, and with which ``EventMeta.source``.

This is part of the topic contract, so it lives beside the BotEventMap; the bus enforces it
through plane handles. Exact names come from the Topic constants; ``plane:*`` patterns cover a
whole plane's prefix, including topics plugins add under it.
"""

from __future__ import annotations

from collections.abc import Iterable

from contracts.meta import Source
from contracts.topics import (
    ANALYTICS_DRIFT,
    CONTROL_COMMAND,
    CONTROL_STATE,
    ERROR_EVENT,
    MARKET_CONNECT,
    MARKET_DISCONNECT,
    MARKET_SUBSCRIBE,
    OBSERVABILITY_ALERT,
)

_MARKET_REQUESTS = (MARKET_CONNECT.name, MARKET_DISCONNECT.name, MARKET_SUBSCRIBE.name)

RESERVED: dict[str, str] = {
    CONTROL_STATE.name: "control",
    **dict.fromkeys(_MARKET_REQUESTS, "control"),
    "risk:*": "risk",
    "exec:*": "execution",
    "portfolio:*": "execution",
}
"""Topics only one plane may publish, whatever rights a plugin declares."""


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


class PublishRights:
    """Which topic names a plane may publish: exact names and ``prefix:*`` patterns."""

    __slots__ = ("patterns", "plane")

    def __init__(self, plane: str, patterns: Iterable[str]) -> None:
        self.plane = plane
        self.patterns = tuple(patterns)

    def allows(self, name: str) -> bool:
        """True when ``name`` matches a pattern and no other plane reserved it."""
        for reserved, owner in RESERVED.items():
            if owner != self.plane and _matches(reserved, name):
                return False
        return any(_matches(p, name) for p in self.patterns)


BUILTIN_RIGHTS: dict[str, tuple[Source, tuple[str, ...]]] = {
    "control": (Source.SYSTEM, ("control:*", *_MARKET_REQUESTS)),
    "market": (Source.MARKET, ("market:*",)),
    "analytics": (Source.ANALYTICS, ("analytics:*",)),
    "strategy": (Source.STRATEGY, ("strategy:*",)),
    "risk": (Source.RISK, ("risk:*",)),
    "execution": (Source.TRADING, ("exec:*", "portfolio:*")),
    "storage": (Source.STORAGE, ("state:*",)),
    "observability": (Source.SYSTEM, ("observability:*",)),
    "research": (Source.RESEARCH, ("research:*", ANALYTICS_DRIFT.name)),
    "cli": (Source.CLI, (CONTROL_COMMAND.name,)),
    "telegram": (Source.TELEGRAM, (CONTROL_COMMAND.name,)),
}
"""Each built-in plane's source and what it may publish. Every plane except research may also
publish ``error:event`` and ``observability:alert``."""

_SHARED = (ERROR_EVENT.name, OBSERVABILITY_ALERT.name)


def rights_for(plane: str, declared: Iterable[str] = ()) -> tuple[Source, PublishRights]:
    """The source and rights of ``plane``: fixed for built-in planes, ``declared`` for new ones."""
    builtin = BUILTIN_RIGHTS.get(plane)
    if builtin is not None:
        source, patterns = builtin
        extra = () if plane == "research" else _SHARED
        return source, PublishRights(plane, (*patterns, *extra))
    return Source.SYSTEM, PublishRights(plane, (*declared, *_SHARED))

"""Event metadata carried as the first field of every payload, and the base payload class."""

from __future__ import annotations

import enum

import attrs


class Source(enum.StrEnum):
    """Who emitted an event (``EventMeta.source``)."""

    CLI = "cli"
    TELEGRAM = "telegram"
    SYSTEM = "system"
    MARKET = "market"
    ANALYTICS = "analytics"
    STRATEGY = "strategy"
    RISK = "risk"
    TRADING = "trading"
    STORAGE = "storage"
    RESEARCH = "research"


@attrs.frozen
class EventMeta:
    """Who emitted an event, when (unix milliseconds), and the causal chain it belongs to.

    Propagate ``correlation_id``: an intent caused by a feature vector carries that vector's
    correlation id, and so on down to orders and fills.
    """

    source: Source
    ts: int
    correlation_id: str | None = None


@attrs.frozen
class Payload:
    """Base class of every event payload: ``meta`` is always the first field.

    Subclasses are ``@attrs.frozen`` too; derive a changed copy with ``attrs.evolve``.
    """

    meta: EventMeta

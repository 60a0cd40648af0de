"""Built-in plugin of the storage plane."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.ports import PlaneSpec
from contracts.topics import STATE_JOURNAL_FAILED, STATE_REGISTRY, Topic
from planes.storage.plane import StoragePlane
from plugins.hookspecs import hookimpl


@hookimpl
def planes_register_topics() -> Sequence[Topic[Any]]:
    """``state:registry`` and ``state:journal_failed``: they exist only where storage does."""
    return [STATE_REGISTRY, STATE_JOURNAL_FAILED]


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Register the StoragePlane (idle when ``storage.enabled`` is false)."""
    return [PlaneSpec(name="storage", plane="storage", factory=StoragePlane)]

"""The built-in plugins: ``(name, module)`` pairs, registered exactly like outside plugins.

Each module implements hooks from ``plugins.hookspecs``. ``plugins.disabled`` in config can
leave any of them out by name.
"""

from __future__ import annotations

BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("planes.observability", "planes.observability.plugin"),
    ("planes.storage", "planes.storage.plugin"),
    ("planes.market", "planes.market.plugin"),
    ("planes.analytics", "planes.analytics.plugin"),
    ("planes.strategy", "planes.strategy.plugin"),
    ("planes.risk", "planes.risk.plugin"),
    ("planes.execution", "planes.execution.plugin"),
    ("planes.control", "planes.control.plugin"),
)

"""Cross-cutting payloads: handler failures and alerts."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from contracts.enums import Severity
from contracts.meta import Payload


@attrs.frozen
class ErrorEvent(Payload):
    """Something failed without stopping the runtime: a handler raised, a publish was denied.

    ``origin`` names who failed (a handler's qualified name, a plugin), ``topic`` the topic it
    was handling or publishing.
    """

    origin: str
    topic: str
    error_type: str
    message: str


@attrs.frozen
class Alert(Payload):
    """Something an operator should know about (stale feed, breaker open, risk halt, drift)."""

    severity: Severity
    code: str
    message: str
    labels: Mapping[str, str] = attrs.field(factory=dict)

"""structlog, configured once: console on a TTY, JSON otherwise or on request; secrets redacted.

Processors are plain callables ``(logger, method_name, event_dict) -> event_dict``.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO, cast

import structlog

REDACTED = "***"
_SECRET_KEY = re.compile(
    r"token|secret|passw(or)?d|passphrase|api[_-]?key|private[_-]?key|signature|authorization"
    r"|(^|[_\-.])key$|^key[_\-.]|cookie|credential",
    re.IGNORECASE,
)


def is_secret_key(name: str) -> bool:
    """True when a key is named like a secret (token, secret, key, password ...)."""
    return bool(_SECRET_KEY.search(name))


class RedactSecrets:
    """Replace the value of every key named like a secret, at any depth, with ``***``."""

    __slots__ = ("replacement",)

    def __init__(self, replacement: str = REDACTED) -> None:
        self.replacement = replacement

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self._clean(key, event_dict[key])
        return event_dict

    def _clean(self, key: str, value: Any) -> Any:
        if is_secret_key(key) and value is not None and key != "event":
            return self.replacement
        if isinstance(value, Mapping):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            cleaned = [self._clean("", v) for v in value]
            if isinstance(value, list):
                return cleaned
            # A namedtuple's constructor takes its fields, not an iterable.
            return getattr(value, "_make", tuple)(cleaned)
        return value


class _Switch:
    """Drops every event while logs are off (``logs on|off`` in the shell)."""

    __slots__ = ("enabled",)

    def __init__(self) -> None:
        self.enabled = True

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self.enabled:
            raise structlog.DropEvent
        return event_dict


SWITCH = _Switch()
_configured: dict[str, Any] = {}


class _CurrentStderr(io.TextIOBase):
    """Writes to whatever ``sys.stderr`` is *now*.

    An interactive shell that patches it (prompt-toolkit's ``patch_stdout``) so keeps log lines
    above the prompt.
    """

    def write(self, text: str) -> int:
        """Write to the current ``sys.stderr``."""
        return sys.stderr.write(text)

    def flush(self) -> None:
        """Flush the current ``sys.stderr``."""
        sys.stderr.flush()

    def isatty(self) -> bool:
        """Whether the current ``sys.stderr`` is a terminal."""
        return sys.stderr.isatty()


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    enabled: bool = True,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the process; later calls only change level, format and switch.

    ``fmt`` is ``console``, ``json`` or ``auto`` (console when ``stream`` is a TTY).
    """
    stream = stream or cast(TextIO, _CurrentStderr())
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    SWITCH.enabled = enabled
    structlog.configure(
        processors=[
            SWITCH,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            RedactSecrets(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _configured.update(level=level, fmt=fmt, stream=stream)


def set_level(level: str) -> None:
    """Change the minimum level of every logger (``log level LEVEL``)."""
    configure_logging(
        level,
        _configured.get("fmt", "auto"),
        enabled=SWITCH.enabled,
        stream=_configured.get("stream"),
    )

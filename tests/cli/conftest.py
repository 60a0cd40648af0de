"""Shared fixtures of the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from planes import logs


@pytest.fixture(autouse=True)
def _restore_structlog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A command run in-process (backtest, journal export, replay) configures logging for the
    # process: put structlog, the switch and the remembered stream back for the tests after it.
    monkeypatch.setattr(logs.SWITCH, "enabled", True)
    monkeypatch.setattr(logs, "_configured", {})
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()

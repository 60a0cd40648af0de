"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.planes.storage.harness import PlanesRun


@pytest.fixture
def planes_run() -> Iterator[PlanesRun]:
    """Start ``planes run`` processes (``PlanesRun``); the ones left running are killed."""
    runner = PlanesRun()
    yield runner
    runner.close()

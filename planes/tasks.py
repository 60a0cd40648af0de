"""Small asyncio helpers shared by the planes (no plane of its own)."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[object] | asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it has ended; no-op for None.

    Our own cancellation while waiting still propagates: only the task's ``CancelledError`` is
    swallowed, so a caller that is itself being cancelled is not silently kept alive.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise

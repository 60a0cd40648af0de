"""``collector_paused``: the cyclic garbage collector off for a bulk step (a load, a replay).

Shared by the planes that build hundreds of thousands of long-lived objects in one go: the
market plane parsing a replay file, the storage plane replaying a journal at boot.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (``gc.disable``) for the block, if it is on.

    A bulk step makes hundreds of thousands of container objects that all live until it ends
    (a file's rows, a replay's ledger entries and records): every collection they set off walks
    them and everything else the process holds, and frees nothing. Reference counting frees as
    usual meanwhile; only garbage cycles wait, for the block's duration. The collector is
    process-wide, so it is turned back on only if it was on (a caller that turned it off keeps
    it off); a thread that turns it off meanwhile finds it on again afterwards. Not
    ``gc.freeze()``: that would take every object of the process, not only the step's, out of
    the collector's reach for good.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()

"""``planes run`` as a real process for the storage tests, and its journal as they read it.

``PlanesRun`` (the ``planes_run`` fixture of ``conftest.py``) starts the installed console script
headless on a data dir, with the test's ``--set`` settings, outside any ``PLANES__*`` variable of
the calling environment, and with the repository on ``PYTHONPATH`` (so ``class_path`` settings
can name a test module). Whatever is still running when the test ends is killed and reaped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from planes.storage.journal import JournalRecord, open_reader
from planes.storage.plane import data_paths

PLANES = str(Path(sys.executable).parent / "planes")
ROOT = Path(__file__).resolve().parents[3]


class PlanesRun:
    """Starts ``planes run`` processes and ends the ones a test leaves running."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[str]] = []

    def __call__(
        self, data_dir: Path, *settings: str, duration: float | None = None
    ) -> subprocess.Popen[str]:
        """``planes run --headless`` on ``data_dir`` with ``--set`` for each of ``settings``."""
        args = [PLANES, "run", "--headless", "--set", f"runtime.data_dir={data_dir}"]
        for setting in settings:
            args += ["--set", setting]
        if duration is not None:
            args += ["--duration", str(duration)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLANES__")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
        process = subprocess.Popen(
            args,
            cwd=data_dir.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Kill and reap every process still running."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=10)


def journal_records(data_dir: Path) -> list[JournalRecord]:
    """Every record of ``data_dir``'s journal; [] while there is none or it cannot be read yet."""
    path = data_paths(data_dir)[0]
    if not path.exists():
        return []
    try:
        return list(open_reader(path).read())
    except Exception:
        return []

"""Build hook: compile the hot modules listed in ``planes/native.py`` with mypyc.

Everything else about the package is in ``pyproject.toml``. The extensions are optional: with
``PLANES_NATIVE=0`` set for the build, without mypyc, or when the C compiler fails, the package
installs as plain Python and ``planes.native.status()`` says so. The manifest of the compiled
sources (``planes/_native.json``) is written only once every extension is built, beside them:
in the checkout for an editable install, in the wheel otherwise.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
NATIVE = runpy.run_path(str(ROOT / "planes" / "native.py"))


class BuildNative(build_ext):
    """``build_ext`` that records what it compiled, and only when all of it compiled."""

    def run(self) -> None:
        manifest = self._planes_dir() / NATIVE["MANIFEST"]
        manifest.unlink(missing_ok=True)  # no manifest, no claim that anything is compiled
        if self.inplace:  # a module compiled by an earlier build, no longer in the list
            for name, extension in NATIVE["stray"](ROOT).items():
                print(f"planes-bot: removing {extension} ({name} is no longer compiled)")
                extension.unlink()
        self._built: set[str] = set()
        super().run()
        names = {extension.name for extension in self.extensions}
        if self.extensions and self._built >= names:
            digests = {
                name: NATIVE["source_digest"](NATIVE["module_source"](ROOT, name))
                for name in NATIVE["MODULES"]
            }
            manifest.parent.mkdir(parents=True, exist_ok=True)
            manifest.write_text(json.dumps({"modules": digests}, indent=1, sort_keys=True) + "\n")
        elif self.extensions:
            failed = ", ".join(sorted(names - self._built))
            print(f"planes-bot: not compiled ({failed}): the sources run", file=sys.stderr)

    def build_extension(self, ext: Any) -> None:
        super().build_extension(ext)  # raises on failure; optional ones are caught by the caller
        self._built.add(ext.name)

    def _planes_dir(self) -> Path:
        return ROOT / "planes" if self.inplace else Path(self.build_lib) / "planes"


def native_extensions() -> list[Any]:
    """The mypyc extensions of ``planes.native.MODULES``, or none."""
    if os.environ.get(NATIVE["ENV"]) == "0":
        print(f"planes-bot: {NATIVE['ENV']}=0, building without mypyc", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - a build-time dependency only
    except ImportError as exc:
        print(f"planes-bot: no mypyc ({exc}), building without it", file=sys.stderr)
        return []
    sources = [str(NATIVE["module_source"](Path(), name)) for name in NATIVE["MODULES"]]
    os.chdir(ROOT)  # mypyc takes paths relative to the project
    try:
        extensions = mypycify(sources, opt_level="3", group_name=NATIVE["GROUP"], verbose=False)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - mypyc exits on a type error
        print(f"planes-bot: mypyc failed ({exc!r}), building without it", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # a compiler failure leaves the sources in use
    return extensions


setup(ext_modules=native_extensions(), cmdclass={"build_ext": BuildNative})

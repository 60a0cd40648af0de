"""The ``planes`` command.

Imports ``planes`` first, so that ``planes.native.guard()`` has decided which modules run
compiled before any module of this package is imported (see ``planes/native.py``).
"""

import planes  # noqa: F401

"""The runtime's planes.

Before any plane is imported, ``native.guard()`` decides whether the mypyc-compiled hot modules
are used or their sources (see ``planes/native.py``).
"""

from planes import native as _native

_native.guard()

"""Suite-wide settings: the Hypothesis profiles.

``fast`` (the default) keeps local runs quick; ``ci`` tries more examples and prints the blob
that reproduces a failure. Neither has a deadline: a shared or busy machine stalls a single
example now and then, and a property test must fail on its property, not on the clock.
``HYPOTHESIS_PROFILE`` picks a profile by name; otherwise ``ci`` is used when the ``CI``
variable is set (as CI services do), ``fast`` elsewhere. ``pytest --hypothesis-profile NAME``
still overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis loads its own "ci" profile (derandomize=True, no database) whenever a CI variable
# is set, and a profile without a parent inherits whatever is loaded; the explicit parent keeps
# ours the same everywhere, and random: each CI run explores new examples.
_DEFAULT = settings.get_profile("default")
settings.register_profile("fast", parent=_DEFAULT, max_examples=50, deadline=None)
settings.register_profile(
    "ci", parent=_DEFAULT, max_examples=200, deadline=None, print_blob=True, derandomize=False
)


def _profile_name() -> str:
    explicit = os.environ.get("HYPOTHESIS_PROFILE", "").strip()
    if explicit:
        return explicit
    ci = os.environ.get("CI", "").strip().lower()
    return "fast" if ci in {"", "0", "false", "no", "off"} else "ci"


settings.load_profile(_profile_name())


@pytest.fixture(autouse=True)
def _data_dir_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own directory, so the default data dir (``./var``) is the test's.

    Tests that read repository files build their paths from the repository root.
    """
    monkeypatch.chdir(tmp_path)

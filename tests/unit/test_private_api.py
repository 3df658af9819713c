"""pytest's private API stays in one module, so a pytest release that moves it breaks one place."""

from __future__ import annotations

from pathlib import Path

import pytest_madengine

PACKAGE = Path(pytest_madengine.__file__).parent


def test_only_the_compat_module_reaches_into_pytest_internals() -> None:
    users = sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if "_pytest" in path.read_text("utf-8")
    )
    assert users == ["_compat.py"]

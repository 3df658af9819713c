"""pytest's private API, all of it in one place: what no public route gives a plugin that makes its
own parametrized items. Tested on the oldest (8.4, `tox -e pytest84`) and newest supported pytest."""

from __future__ import annotations

from _pytest._code.code import TerminalRepr
from _pytest.fixtures import FuncFixtureInfo

try:  # pytest >= 9.2
    from _pytest.python import CallSpec
except ImportError:  # pytest 8.4 - 9.1
    from _pytest.python import CallSpec2 as CallSpec  # type: ignore[attr-defined,no-redef,unused-ignore]

__all__ = ["FuncFixtureInfo", "TerminalRepr", "item_callspec"]


def item_callspec(param_id: str) -> CallSpec:
    """A parametrization of one id, so that `name[id]` is a structured node id (`--lf` compares those;
    a bare name with brackets would never match a stored id)."""
    return CallSpec(_idlist=(param_id,))

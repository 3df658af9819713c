"""Hooks a conftest.py (or plugin) implements to customise pytest-madengine, instead of patching it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .report.results import Result
    from .zoo.models import ModelSpec

hookspec = pytest.hookspec


@hookspec
def pytest_madengine_build_args(spec: ModelSpec, arch: str) -> dict[str, str] | None:
    """Extra `docker build` args for the image of `spec` on `arch`; the dicts of all hooks are merged
    (they go into the image's content hash, so a change rebuilds)."""


@hookspec
def pytest_madengine_container_options(item: pytest.Item, spec: ModelSpec, options: dict[str, Any]) -> None:
    """Adjust the container before it starts: `options` are the keyword arguments of the docker SDK's
    `containers.create`, with `environment` as a dict. Mutate it in place."""


@hookspec(firstresult=True)
def pytest_madengine_parse_result(item: pytest.Item, log: str, workdir: Path) -> list[Result] | None:
    """Parse the model's results yourself instead of the `performance:` line: `log` is the container
    log and `workdir` a copy of the run directory after the script ended. Return a list of
    `pytest_madengine.Result` (the first hook that returns one wins), or None to let the next decide."""


@hookspec
def pytest_madengine_result(item: pytest.TestReport, result: dict[str, str]) -> None:
    """Called with every result on the process that writes reports (the xdist controller), e.g. to
    upload it: `item` is the test's report (the item itself lives on a worker), `result` the perf.csv
    row. An exception here becomes a warning; the run goes on."""

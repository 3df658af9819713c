"""A plugin the tests load into the pytest sessions they start (through PYTEST_PLUGINS): it writes
the session's run id beside the zoo, so a test can scope what it asks the engine to its own run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_madengine.runtime import RUNTIME_KEY

RUN_ID_FILE = "madengine-run-id"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    runtime = config.stash.get(RUNTIME_KEY, None)
    if runtime is not None:
        Path(config.invocation_params.dir, RUN_ID_FILE).write_text(runtime.run_id)

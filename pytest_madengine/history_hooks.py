"""The session's side of the results history: on the controller, every row of the session, stored
as one run when the session ends (autosave). Workers only read the history (the noise gate)."""

from __future__ import annotations

import re
import socket
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from .gpus.detect import runtime_version
from .history.records import RunRecord, StorageError, StoredResult
from .reporting import item_report
from .runtime import Runtime

_SECRET_OPTION = re.compile(r"password|passwd|token|secret|credential", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(//[^/:@\s]+):[^@/\s]+@")


def scrubbed_args(args: tuple[str, ...]) -> str:
    """The pytest arguments with secrets out: values of options named like a password, token or
    secret, and passwords in URLs."""
    kept: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            kept.append("***")
            hide_next = False
            continue
        name, equals, _ = arg.partition("=")
        if arg.startswith("-") and _SECRET_OPTION.search(name):
            kept.append(f"{name}=***" if equals else arg)
            hide_next = not equals
            continue
        kept.append(_URL_PASSWORD.sub(r"\1:***@", arg))
    return " ".join(kept)


def git_state(directory: Path) -> tuple[str, bool | None]:
    """(commit, dirty) of the checkout holding `directory`; ("", None) outside one."""
    try:
        head = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.returncode != 0:
            return "", None
        status = subprocess.run(["git", "-C", str(directory), "status", "--porcelain"], capture_output=True, text=True)
        return head.stdout.strip(), bool(status.stdout.strip())
    except OSError:
        return "", None


class HistoryWriter:
    """Collects every row the session reports and stores them as one run at its end."""

    def __init__(self, config: pytest.Config, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.started = datetime.now(timezone.utc)
        self.rows: list[dict[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = item_report(report)
        if found is not None:
            self.rows += [{**r.row, **{f"extra.{k}": v for k, v in r.extra.items()}} for r in found.rows]

    def record(self) -> RunRecord:
        runtime = self.runtime
        commit, dirty = git_state(Path(self.config.invocation_params.dir))
        try:
            plugin = version("pytest-madengine")
        except PackageNotFoundError:
            plugin = ""
        detection = runtime.detection
        return RunRecord(
            run_id=runtime.run_id,
            started=self.started,
            ended=datetime.now(timezone.utc),
            git_commit=commit,
            git_dirty=dirty,
            host=socket.gethostname(),
            gpu_product=runtime.pool.product_name(),
            driver=detection.driver_version,
            runtime_version=runtime_version(detection, timeout=runtime.settings.probe_timeout),
            plugin_version=plugin,
            pytest_args=scrubbed_args(tuple(self.config.invocation_params.args)),
        )

    def pytest_sessionfinish(self) -> None:
        store = self.runtime.history()
        if store is None or not self.rows:
            return
        product = self.runtime.pool.product_name()
        run_id = self.runtime.run_id
        stored = [StoredResult.from_row(run_id, row, product, row.get("docker_sha", "")) for row in self.rows]
        try:
            store.save(self.record(), stored)
        except StorageError as exc:
            self.config.issue_config_time_warning(pytest.PytestWarning(f"results history: {exc}"), stacklevel=2)


def register(config: pytest.Config, runtime: Runtime) -> None:
    """Open (and migrate) the history and read what the gate compares with now, so a bad URL or an
    unreadable database is a usage error; store the session at its end."""
    if runtime.settings.history is None:
        return
    try:
        runtime.past_values()
    except StorageError as exc:
        raise pytest.UsageError(f"--madengine-storage: {exc}") from None
    if runtime.settings.history.autosave:
        config.pluginmanager.register(HistoryWriter(config, runtime), "madengine-history")

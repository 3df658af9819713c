"""Results into reports: rows ride on each test report to the process that writes perf.csv."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from .errors import MadengineError
from .images import BuiltImage
from .manifest import BuildRecord, write_manifest
from .nodes import BUILD_RECORD_KEY, ModelItem
from .perfcsv import PerfCsvError, append_rows
from .results import FAILURE, SKIPPED, Result
from .rows import RowFacts, junit_properties, perf_row
from .runtime import Runtime
from .summary import Results, html_document, json_document, markdown_table, terminal_table, write_json


def _reason_of(report: pytest.TestReport, call: pytest.CallInfo[None]) -> str:
    if report.skipped:
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            return str(longrepr[2]).removeprefix("Skipped: ")
        return "skipped"
    exc = call.excinfo.value if call.excinfo else None
    if isinstance(exc, MadengineError):
        return exc.reason_text()
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}" if exc else "error"


def rows_for_report(item: ModelItem, report: pytest.TestReport, call: pytest.CallInfo[None]) -> list[dict[str, str]]:
    """The item's rows once it has an outcome: its results, or one SKIPPED/FAILURE row with a reason."""
    rows = item.madengine_rows
    if not rows and (report.skipped or report.failed):
        status = SKIPPED if report.skipped else FAILURE
        image = item.funcargs.get("madengine_image") if hasattr(item, "funcargs") else None
        facts = item.row_facts(image if isinstance(image, BuiltImage) else None, 0)
        rows = [perf_row(Result(item.spec.name, "", "", status, _reason_of(report, call)), facts)]
    item.madengine_rows = []
    return rows


def attach(item: ModelItem, report: pytest.TestReport, rows: list[dict[str, str]]) -> None:
    """Rows travel on the report (xdist serialises its attributes); properties go to JUnit."""
    report.madengine_rows = rows  # type: ignore[attr-defined]
    item.user_properties.extend(junit_properties(rows))


def crashed_worker_rows(report: pytest.TestReport) -> list[dict[str, str]]:
    """xdist reports a crashed worker's item with when='???' and nothing of ours: keep a row anyway."""
    path, _, rest = report.nodeid.partition("::")
    if str(report.when) != "???" or not report.failed or not path.endswith("models.json") or "[" not in rest:
        return []
    name, _, params = rest.partition("[")
    arch = params.rstrip("]").split("-", 1)[0]
    facts = RowFacts(n_gpus=0, training_precision="", args="", tags=(), docker_file="", gpu_architecture=arch)
    return [perf_row(Result(name, "", "", FAILURE, "worker crashed"), facts)]


class PerfCsvWriter:
    """Registered on the process that writes reports; appends each report's rows as it arrives,
    so a crash mid-run leaves the rows of finished models in place."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rows = getattr(report, "madengine_rows", None) or crashed_worker_rows(report)
        if not rows:
            return
        try:
            append_rows(self.path, rows)
        except (OSError, PerfCsvError) as exc:
            warnings.warn(f"pytest-madengine: could not write perf.csv rows for {report.nodeid}: {exc}", stacklevel=1)


def build_record_of(item: ModelItem) -> dict[str, object] | None:
    """What the manifest needs of an item whose image is ready, plus its models.json entry."""
    record = item.stash.get(BUILD_RECORD_KEY, None)
    if record is None:
        return None
    spec = item.spec
    entry = {
        "name": spec.name,
        "dockerfile": spec.dockerfile,
        "scripts": spec.scripts,
        "args": spec.args,
        "n_gpus": str(spec.n_gpus),
        "tags": list(spec.tags),
        "timeout": spec.timeout,
        "multiple_results": spec.multiple_results,
        "skip_gpu_arch": ",".join(spec.skip_gpu_arch),
        "training_precision": spec.training_precision,
        **dict(spec.extra),
    }
    return {"record": asdict(record), "model": entry}


class ManifestWriter:
    """Collects build records from reports (any worker) and rewrites the manifest as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, BuildRecord] = {}
        self.models: dict[str, dict[str, object]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "madengine_build", None)
        if not data:
            return
        record = BuildRecord(**data["record"])
        self.records[record.item] = record
        self.models[record.item] = data["model"]
        write_manifest(self.path, self.records, self.models)


class ResultsCollector:
    """On the reporting process: every result for the end-of-session table, JSON, Markdown and HTML."""

    def __init__(self, config: pytest.Config, runtime: Runtime, verbosity: int) -> None:
        self.config = config
        self.runtime = runtime
        self.verbosity = verbosity
        self.results = Results()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rows = getattr(report, "madengine_rows", None) or crashed_worker_rows(report)
        if rows:
            tail = "\n".join(report.longreprtext.splitlines()[-60:]) if report.failed else ""
            self.results.add(rows, report.nodeid, tail)
            for row in rows:
                self._result_hooks(report, row)

    def _result_hooks(self, report: pytest.TestReport, row: dict[str, str]) -> None:
        """Each implementation on its own: one that raises is a warning, and the others still run."""
        hook = self.config.hook.pytest_madengine_result
        for impl in reversed(hook.get_hookimpls()):
            try:
                offered = {"item": report, "result": dict(row)}
                impl.function(**{name: offered[name] for name in impl.argnames if name in offered})
            except Exception as exc:  # a user's hook: whatever it raises must not end the run
                self.config.issue_config_time_warning(
                    pytest.PytestWarning(
                        f"pytest_madengine_result hook {impl.plugin_name} failed for {report.nodeid}: "
                        f"{type(exc).__name__}: {exc}"
                    ),
                    stacklevel=2,
                )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = terminal_table(self.results, self.verbosity)
        if lines:
            terminalreporter.write_sep("=", "madengine results")
            for line in lines:
                terminalreporter.write_line(line)

    def pytest_sessionfinish(self) -> None:
        settings, runtime = self.runtime.settings, self.runtime
        if settings.json_out is not None:
            write_json(settings.json_out, json_document(self.results, runtime.detection, runtime.run_id))
        if settings.html_out is not None:
            settings.html_out.parent.mkdir(parents=True, exist_ok=True)
            settings.html_out.write_text(html_document(self.results, runtime.detection, runtime.run_id), "utf-8")
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary and self.results.entries:
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(markdown_table(self.results))

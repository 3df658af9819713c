"""Each item's record into its concluding report, and the writers that read it there.

Under xdist the reports cross to the controller as JSON: the record travels as an `ItemReport`,
attached once, to the report that concludes the item (the call, or a setup that failed or skipped).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from .errors import MadengineError
from .record import ItemRecord
from .report.manifest import BuildRecord, write_manifest
from .report.perfcsv import PerfCsvError, append_rows
from .report.results import FAILURE, SKIPPED, Result
from .report.rows import ItemReport, ResultRow, RowFacts, junit_properties, perf_row
from .report.summary import ResultTable, html_document, json_document, markdown_table, terminal_table, write_json
from .runtime import Runtime

ATTRIBUTE = "madengine"  # the report attribute that carries the ItemReport


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


def conclude(item: pytest.Item, record: ItemRecord, report: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
    """Attach the record to its reports: the manifest entry to the setup report once the image is
    ready (an interrupted run still records its image), the rows to the report that concludes the
    item (the call, or a setup that failed or skipped). The rows' JUnit properties go where junitxml
    reads them: pytest copies item.user_properties onto the teardown report."""
    if call.when == "setup" and report.passed:
        setattr(report, ATTRIBUTE, ItemReport((), record.build_entry(item.name)).to_json())
        return
    if call.when == "teardown" or (call.when == "setup" and not (report.skipped or report.failed)):
        return
    status = SKIPPED if report.skipped else FAILURE if report.failed else ""  # passed without a run: no rows
    found = ItemReport(record.result_rows(status, _reason_of(report, call)))
    setattr(report, ATTRIBUTE, found.to_json())
    item.user_properties.extend(junit_properties([r.row for r in found.rows]))


def hook_result(found: ResultRow) -> dict[str, str]:
    """What pytest_madengine_result gets: the perf.csv row, the model's extra columns as `extra.<name>`
    and, when compared, `baseline` (the dict the hook has always received)."""
    return {
        **found.row,
        **{f"extra.{k}": v for k, v in found.extra.items()},
        **({"baseline": found.baseline} if found.baseline else {}),
    }


def item_report(report: pytest.TestReport) -> ItemReport | None:
    """The ItemReport a report carries (a crashed worker's item gets one from CrashedWorkerRows)."""
    data = getattr(report, ATTRIBUTE, None)
    return ItemReport.from_json(data) if data else None


class CrashedWorkerRows:
    """Registered on the process that writes reports, ahead of the writers: a crashed worker's item
    gets one FAILURE row, unless its own rows came first (a worker killed in the item's teardown:
    the model's row stands, and perf.csv keeps one row per run)."""

    def __init__(self) -> None:
        self.concluded: set[str] = set()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = item_report(report)
        if found is not None:
            if found.rows:
                self.concluded.add(report.nodeid)
            return
        crashed = () if report.nodeid in self.concluded else crashed_worker_rows(report)
        if crashed:
            setattr(report, ATTRIBUTE, ItemReport(crashed).to_json())


def crashed_worker_rows(report: pytest.TestReport) -> tuple[ResultRow, ...]:
    """xdist reports a crashed worker's item with when='???' and nothing of ours: keep a row anyway
    (the item lived on the worker, so its node id is all there is to go on)."""
    path, _, rest = report.nodeid.partition("::")
    if str(report.when) != "???" or not report.failed or not path.endswith("models.json") or "[" not in rest:
        return ()
    name, _, params = rest.partition("[")
    arch = params.rstrip("]").split("-", 1)[0]
    facts = RowFacts(n_gpus=0, training_precision="", args="", tags=(), docker_file="", gpu_architecture=arch)
    return (ResultRow(perf_row(Result(name, "", "", FAILURE, "worker crashed"), facts)),)


class PerfCsvWriter:
    """Registered on the process that writes reports; appends each report's rows as it arrives,
    so a crash mid-run leaves the rows of finished models in place."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = item_report(report)
        if found is None or not found.rows:
            return
        try:
            append_rows(self.path, [r.row for r in found.rows])
        except (OSError, PerfCsvError) as exc:
            warnings.warn(f"pytest-madengine: could not write perf.csv rows for {report.nodeid}: {exc}", stacklevel=1)


class ManifestWriter:
    """Collects build records from reports (any worker) and rewrites the manifest as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, BuildRecord] = {}
        self.models: dict[str, dict[str, object]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = item_report(report)
        data = found.build if found is not None else None
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
        self.results = ResultTable()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = item_report(report)
        if found is not None and found.rows:
            tail = "\n".join(report.longreprtext.splitlines()[-60:]) if report.failed else ""
            self.results.add(found.rows, report.nodeid, tail)
            for row in found.rows:
                self._result_hooks(report, hook_result(row))

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

    def _trends(self) -> dict[tuple[str, str], str]:
        """With a history: the last 20 earlier results of each model and arch of this session."""
        runtime, kept = self.runtime, self.runtime.settings.history
        store = runtime.history() if kept is not None else None
        if store is None or kept is None:
            return {}
        from .history.chart import trend_charts
        from .history.records import number

        product = runtime.pool.product_name()

        def earlier(model: str, arch: str) -> list[tuple[str, float, str]]:
            stored = [r for r in store.history(model, arch, product, 21) if r.run_id != runtime.run_id][-20:]
            return [
                (r.run_id, r.performance, str(r.row.get("git_commit", ""))) for r in stored if r.performance is not None
            ]

        current = [
            (e.row.get("model", ""), e.row.get("gpu_architecture", ""), number(e.row.get("performance", "")))
            for e in self.results.entries
            if e.row.get("status") != "SKIPPED"
        ]
        return trend_charts(earlier, current, kept.k)

    def pytest_sessionfinish(self) -> None:
        settings, runtime = self.runtime.settings, self.runtime
        if settings.json_out is not None:
            write_json(settings.json_out, json_document(self.results, runtime.detection, runtime.run_id))
        if settings.html_out is not None:
            settings.html_out.parent.mkdir(parents=True, exist_ok=True)
            page = html_document(self.results, runtime.detection, runtime.run_id, self._trends())
            settings.html_out.write_text(page, "utf-8")
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary and self.results.entries:
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(markdown_table(self.results))

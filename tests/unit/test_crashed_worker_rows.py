"""A crashed xdist worker's item: one FAILURE row, unless the item's own rows already came."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pytest_madengine.report.results import SUCCESS, Result
from pytest_madengine.report.rows import ItemReport, ResultRow, RowFacts, perf_row
from pytest_madengine.reporting import ATTRIBUTE, CrashedWorkerRows, item_report

NODEID = "models/models.json::fast[gfx942]"


def crash_report(nodeid: str = NODEID) -> pytest.TestReport:
    """What xdist's controller makes for the item a dead worker was running."""
    return pytest.TestReport(nodeid, ("models.json", None, nodeid), {}, "failed", "crashed", cast(Any, "???"))


def finished_report() -> pytest.TestReport:
    report = pytest.TestReport(NODEID, ("models.json", None, NODEID), {}, "passed", None, "call")
    facts = RowFacts(n_gpus=1, training_precision="", args="", tags=(), docker_file="", gpu_architecture="gfx942")
    row = ResultRow(perf_row(Result("fast", "1", "slots", SUCCESS, ""), facts))
    setattr(report, ATTRIBUTE, ItemReport((row,)).to_json())
    return report


def statuses(report: pytest.TestReport) -> list[tuple[str, str]]:
    found = item_report(report)
    return [(r.row["status"], r.row["reason"]) for r in found.rows] if found else []


def test_a_crashed_item_gets_one_failure_row() -> None:
    report = crash_report()
    CrashedWorkerRows().pytest_runtest_logreport(report)
    found = item_report(report)
    assert found is not None
    assert [(r.row["status"], r.row["reason"], r.row["gpu_architecture"]) for r in found.rows] == [
        ("FAILURE", "worker crashed", "gfx942")
    ]


def test_a_worker_killed_in_a_finished_items_teardown_adds_no_second_row() -> None:
    crashes = CrashedWorkerRows()
    crashes.pytest_runtest_logreport(finished_report())
    late = crash_report()
    crashes.pytest_runtest_logreport(late)
    assert statuses(late) == []
    other = crash_report(NODEID.replace("fast", "slow"))
    crashes.pytest_runtest_logreport(other)
    assert statuses(other) == [("FAILURE", "worker crashed")]

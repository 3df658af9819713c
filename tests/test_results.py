"""madengine's performance line and multiple_results rules."""

from __future__ import annotations

import pytest

from pytest_madengine.report.results import FAILURE, SUCCESS, ResultsError, parse_multiple_results, parse_performance


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("performance: 1234.5 samples_per_second", ("1234.5", "samples_per_second")),
        ("x\nperformance: 14164/s, samples_per_second\n", ("14164", "samples_per_second")),
        ("performance: 1.2e+4 tokens/sec", ("1.2e+4", "tokens/sec")),
        ("performance: 1.23E+4 img_s", ("1.23E+4", "img_s")),
        ("performance: .5 ms", (".5", "ms")),
        ("performance: -3 delta", ("-3", "delta")),
        ("performance: 7, fps", ("7", "fps")),
        ("performance: 1 first\nperformance: 2 second", ("1", "first")),
        ("{'train_samples_per_second': 99.5}", ("99.5", "samples_per_second")),
    ],
)
def test_performance_line(log: str, expected: tuple[str, str]) -> None:
    assert parse_performance(log) == expected


@pytest.mark.parametrize("log", ["", "performance: 12", "performance: fast samples", "perf: 1 x"])
def test_no_performance_line(log: str) -> None:
    assert parse_performance(log) is None


def test_multiple_results_rows_are_named_and_extra_columns_kept() -> None:
    text = "model, performance ,metric,temperature\n1,10.5,fps,40\n2,nan,fps,41\n"
    rows = parse_multiple_results("dummy", text, "perf_dummy.csv")
    assert [r.model for r in rows] == ["dummy_1", "dummy_2"]
    assert [r.status for r in rows] == [SUCCESS, FAILURE]
    assert rows[0].extra == {"temperature": "40"}
    assert rows[1].reason == "no performance value"


@pytest.mark.parametrize("missing", ["model", "performance", "metric"])
def test_multiple_results_missing_column(missing: str) -> None:
    columns = [c for c in ("model", "performance", "metric") if c != missing]
    with pytest.raises(ResultsError, match=f"perf.csv is missing the {missing} column"):
        parse_multiple_results("m", ",".join(columns) + "\n1,2\n", "perf.csv")


def test_multiple_results_without_rows() -> None:
    with pytest.raises(ResultsError, match="no rows"):
        parse_multiple_results("m", "model,performance,metric\n", "perf.csv")

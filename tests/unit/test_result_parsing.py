"""A model's log and multiple_results CSV become results by madengine's rules."""

from __future__ import annotations

import pytest

from pytest_madengine.report.results import (
    FAILURE,
    SUCCESS,
    Result,
    ResultsError,
    parse_multiple_results,
    parse_performance,
)


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("performance: 42 samples_per_second", ("42", "samples_per_second")),
        ("warmup\nperformance: 3.5 ms\nperformance: 9 ms\n", ("3.5", "ms")),  # the first line wins
        # a performance line wins over the trainer's figure, wherever each is
        ("{'train_samples_per_second': 7.0}\nperformance: 12 img/s", ("12", "img/s")),
        ("{'train_samples_per_second': 99.5, 'epoch': 3}", ("99.5", "samples_per_second")),
        ('"train_samples_per_second": 1.5e3', ("1.5e3", "samples_per_second")),
    ],
)
def test_performance_of_a_log(log: str, expected: tuple[str, str]) -> None:
    assert parse_performance(log) == expected


def test_a_log_without_a_figure_has_no_performance() -> None:
    assert parse_performance("training done\nloss: 0.1\n") is None


def test_rows_become_results_named_after_the_model() -> None:
    text = "model,performance,metric,temperature\nbs1,10.5,fps,40\nbs2,20,fps,41\n"
    assert parse_multiple_results("dummy", text, "perf.csv") == [
        Result("dummy_bs1", "10.5", "fps", SUCCESS, "", {"temperature": "40"}),
        Result("dummy_bs2", "20", "fps", SUCCESS, "", {"temperature": "41"}),
    ]


def test_cells_and_headers_are_trimmed() -> None:
    text = " model , performance , metric , gpu \n a , 1 , fps , 0 \n"
    assert parse_multiple_results("m", text, "f.csv") == [Result("m_a", "1", "fps", SUCCESS, "", {"gpu": "0"})]


@pytest.mark.parametrize("value", ["", "fast", "nan", "NaN", "+nan", "-nan", "-NAN"])
def test_a_row_without_a_number_is_a_failure_of_that_row_only(value: str) -> None:
    text = f"model,performance,metric\ngood,5,fps\nbad,{value},fps\n"
    good, bad = parse_multiple_results("m", text, "f.csv")
    assert (good.status, good.reason) == (SUCCESS, "")
    assert (bad.model, bad.performance, bad.status, bad.reason) == ("m_bad", value, FAILURE, "no performance value")


@pytest.mark.parametrize("value", ["0", "-3", "1e3", "inf", ".5"])
def test_any_float_is_a_performance(value: str) -> None:
    (row,) = parse_multiple_results("m", f"model,performance,metric\nx,{value},fps\n", "f.csv")
    assert row.status == SUCCESS


def test_short_rows_and_surplus_cells() -> None:
    text = "model,performance,metric,note\nshort,1\nlong,2,fps,n,surplus,cells\n"
    short, long = parse_multiple_results("m", text, "f.csv")
    assert (short.metric, short.extra) == ("", {"note": ""})
    assert (long.metric, long.extra) == ("fps", {"note": "n"})  # cells beyond the header are dropped


def test_a_header_with_a_trailing_comma_adds_an_unnamed_column() -> None:
    (row,) = parse_multiple_results("m", "model,performance,metric,\nx,1,fps,\n", "f.csv")
    assert row.extra == {"": ""}


def test_a_row_without_a_model_cell() -> None:
    (row,) = parse_multiple_results("m", "performance,metric,model\n1,fps\n", "f.csv")
    assert row.model == "m_"


@pytest.mark.parametrize("missing", ["model", "performance", "metric"])
def test_a_missing_column_is_named_with_the_columns_there(missing: str) -> None:
    columns = [c for c in ("model", "performance", "metric", "gpu") if c != missing]
    with pytest.raises(ResultsError) as info:
        parse_multiple_results("m", ",".join(columns) + "\n1,2,3\n", "perf_m.csv")
    assert str(info.value) == f"perf_m.csv is missing the {missing} column (has: {', '.join(columns)})"


def test_an_empty_file_has_nothing() -> None:
    with pytest.raises(ResultsError) as info:
        parse_multiple_results("m", "", "perf_m.csv")
    assert str(info.value) == "perf_m.csv is missing the model column (has: nothing)"


def test_a_header_without_rows_is_an_error() -> None:
    with pytest.raises(ResultsError) as info:
        parse_multiple_results("m", "model,performance,metric\n", "perf_m.csv")
    assert str(info.value) == "perf_m.csv has a header but no rows"

"""Baselines: reading an earlier run, the direction of a metric, and the per-model regression gate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_madengine.report.baseline import (
    Baseline,
    BaselineError,
    Gate,
    compare,
    gate,
    load_baseline,
    lower_is_better,
    parse_percent,
)
from pytest_madengine.report.results import Result
from pytest_madengine.report.rows import RowFacts, perf_row

# -- the threshold ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("5%", 5.0), ("5", 5.0), (" 2.5 % ", 2.5), ("0", 0.0), (7, 7.0)])
def test_percent(text: str, value: float) -> None:
    assert parse_percent(text) == value


@pytest.mark.parametrize("text", ["", "%", "five", "5%%x", "5X"])
def test_not_a_percent(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_percent(text)
    assert str(info.value) == f"expected a percentage like 5%, got {text!r}"


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        parse_percent("-1%")
    assert str(info.value) == "a regression threshold must be >= 0, got '-1%'"


# -- reading the baseline -------------------------------------------------------------------------------------------


def test_perf_csv_baseline_keeps_the_last_success_per_model_and_arch(tmp_path: Path) -> None:
    path = tmp_path / "perf.csv"
    path.write_text(
        "model,gpu_architecture,performance,metric,status\n"
        "a,gfx942,100,fps,SUCCESS\n"
        "a,gfx942,110,fps,SUCCESS\n"  # later wins
        "a,gfx942,1,fps,FAILURE\n"  # not a success: ignored
        "a,gfx90a,50,fps,SUCCESS\n"
        "b,gfx942,n/a,ms,SUCCESS\n"  # not a number: ignored
        "c,gfx942,,ms,SUCCESS\n"
        "d,gfx942,2.5,ms,SKIPPED\n"
        "e,gfx942,7,ms,SUCCESS\n"
    )
    assert load_baseline(path) == {
        ("a", "gfx942"): Baseline(110.0, "fps"),
        ("a", "gfx90a"): Baseline(50.0, "fps"),
        ("e", "gfx942"): Baseline(7.0, "ms"),
    }


def test_a_row_shorter_than_its_header_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "perf.csv"
    path.write_text("model,status,performance,metric\na,SUCCESS\nb,SUCCESS,4,fps\n")  # a's row was cut short
    assert load_baseline(path) == {("b", ""): Baseline(4.0, "fps")}


def test_madengine_perf_csv_without_arch_or_metric_columns(tmp_path: Path) -> None:
    path = tmp_path / "perf.csv"
    path.write_text("model,performance,status\na,3,SUCCESS\n")
    assert load_baseline(path) == {("a", ""): Baseline(3.0, "")}


def test_json_report_baseline(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    results = [
        {"model": "a", "gpu_architecture": "gfx942", "performance": 12.5, "metric": "ms", "status": "SUCCESS"},
        {"model": "b", "gpu_architecture": "gfx942", "performance": 1, "metric": "ms", "status": "FAILURE"},
        {"model": "c", "gpu_architecture": "gfx942", "metric": "ms", "status": "SUCCESS"},  # no performance
        "not a row",
    ]
    path.write_text("\n  " + json.dumps({"results": results}))
    assert load_baseline(path) == {("a", "gfx942"): Baseline(12.5, "ms")}


def test_json_without_results_is_an_empty_baseline(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("{}")
    assert load_baseline(path) == {}


def test_an_empty_csv_is_an_empty_baseline(tmp_path: Path) -> None:
    path = tmp_path / "perf.csv"
    path.write_text("")
    assert load_baseline(path) == {}


def test_a_missing_baseline_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BaselineError) as info:
        load_baseline(tmp_path / "nope.csv")
    assert str(info.value) == f"cannot read baseline {tmp_path / 'nope.csv'}: No such file or directory"


def test_broken_json_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("{not json")
    with pytest.raises(BaselineError, match=r"^baseline .*r\.json is not valid JSON: "):
        load_baseline(path)


@pytest.mark.parametrize(
    "header", ["name,performance,status", "model,perf,status", "model,performance,state", "model,status"]
)
def test_a_csv_without_the_needed_columns_is_an_error(tmp_path: Path, header: str) -> None:
    path = tmp_path / "other.csv"
    path.write_text(f"{header}\nx,1,SUCCESS\n")
    with pytest.raises(BaselineError) as info:
        load_baseline(path)
    assert str(info.value) == f"baseline {path} lacks the model, performance and status columns"


# -- which way is better ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric",
    ["ms", "s", "seconds", "Sec", " us ", "ns", "min", "hours", "h", "latency_p99", "duration", "elapsed_ms"],
)
def test_time_like_metrics_are_lower_is_better(metric: str) -> None:
    assert lower_is_better(metric)


@pytest.mark.parametrize(
    "metric",
    ["s/iter", "ms/batch", "seconds per epoch", "time_per_batch", "ms-per-step", "time-per-step", "sec_/iter"],
)
def test_time_per_something_is_lower_is_better(metric: str) -> None:
    assert lower_is_better(metric)


@pytest.mark.parametrize(
    "metric",
    ["samples_per_second", "tokens/s", "img/sec", "fps", "TFLOPS", "", "items per hour", "steps-per-min", "msgs"],
)
def test_rates_and_other_metrics_are_higher_is_better(metric: str) -> None:
    assert not lower_is_better(metric)


def test_a_declared_direction_wins_over_the_metric_name() -> None:
    assert lower_is_better("fps", declared=False)
    assert not lower_is_better("ms", declared=True)
    assert lower_is_better("ms", declared="no")  # only a real bool declares


# -- the comparison -------------------------------------------------------------------------------------------------


def test_comparison_in_both_directions() -> None:
    slower = compare(120.0, 100.0, lower_better=True)  # a time went up: worse
    assert (slower.change, slower.worse_by, slower.relative_change) == (20.0, 20.0, "+20.00%")
    faster = compare(80.0, 100.0, lower_better=False)  # a rate went down: worse
    assert (faster.change, faster.worse_by, faster.relative_change) == (-20.0, 20.0, "-20.00%")
    better = compare(150.0, 100.0, lower_better=False)
    assert (better.worse_by, better.baseline, better.measured) == (-50.0, 100.0, 150.0)


def test_a_negative_baseline_changes_relative_to_its_size() -> None:
    assert compare(-50.0, -100.0, lower_better=True).change == 50.0


def test_a_zero_baseline() -> None:
    assert compare(0.0, 0.0, lower_better=True).change == 0.0
    assert compare(5.0, 0.0, lower_better=True).change == math.inf
    assert compare(0.5, 0.0, lower_better=True).change == math.inf
    assert compare(-5.0, 0.0, lower_better=True).change == -math.inf


# -- the gate --------------------------------------------------------------------------------------------------------


def results(*entries: tuple[str, str, str, str]) -> tuple[Result, ...]:
    return tuple(Result(m, p, u, s) for m, p, u, s in entries)


BASE = {
    ("slow", "gfx942"): Baseline(100.0, "ms"),
    ("rate", "gfx942"): Baseline(100.0, "fps"),
    ("same", "gfx942"): Baseline(100.0, "fps"),
    ("slow", "gfx90a"): Baseline(1.0, "ms"),
}


def regressions(gates: tuple[Gate, ...]) -> list[str]:
    return [g.regression for g in gates if g.regression]


def test_gate_fails_only_the_results_worse_than_the_threshold() -> None:
    found = results(
        ("slow", "110.5", "ms", "SUCCESS"),
        ("rate", "94", "fps", "SUCCESS"),
        ("same", "100", "fps", "SUCCESS"),
    )
    gates = gate(found, "gfx942", BASE, threshold=5.0)
    assert regressions(gates) == [
        "slow: baseline 100 ms, measured 110.5 ms, change +10.50% (lower is better), threshold 5%",
        "rate: baseline 100 fps, measured 94 fps, change -6.00% (higher is better), threshold 5%",
    ]
    assert [g.relative_change for g in gates] == ["+10.50%", "-6.00%", "+0.00%"]
    assert [g.baseline for g in gates] == ["100", "100", "100"]
    assert found == results(  # the results themselves are left as they were
        ("slow", "110.5", "ms", "SUCCESS"), ("rate", "94", "fps", "SUCCESS"), ("same", "100", "fps", "SUCCESS")
    )


def test_a_regressed_result_is_a_failure_row_with_its_change() -> None:
    (judged,) = gate(results(("slow", "110.5", "ms", "SUCCESS")), "gfx942", BASE, threshold=5.0)
    facts = RowFacts(n_gpus=1, training_precision="", args="", tags=(), docker_file="", gpu_architecture="gfx942")
    row = perf_row(Result("slow", "110.5", "ms", "SUCCESS"), facts, judged)
    assert (row["status"], row["reason"], row["relative_change"]) == ("FAILURE", "regression", "+10.50%")
    passed = perf_row(Result("slow", "100", "ms", "SUCCESS"), facts, Gate("100", "+0.00%"))
    assert (passed["status"], passed["reason"], passed["relative_change"]) == ("SUCCESS", "", "+0.00%")


def test_a_change_exactly_at_the_threshold_passes() -> None:
    assert regressions(gate(results(("slow", "105", "ms", "SUCCESS")), "gfx942", BASE, threshold=5.0)) == []


def test_without_a_threshold_results_are_compared_but_never_failed() -> None:
    (judged,) = gate(results(("slow", "1000", "ms", "SUCCESS")), "gfx942", BASE, threshold=None)
    assert judged == Gate("100", "+900.00%", "")


def test_the_baseline_of_the_results_arch_is_used() -> None:
    assert regressions(gate(results(("slow", "1.5", "ms", "SUCCESS")), "gfx90a", BASE, threshold=10.0)) == [
        "slow: baseline 1 ms, measured 1.5 ms, change +50.00% (lower is better), threshold 10%"
    ]


def test_declared_direction_overrides_the_metric() -> None:
    found = results(("slow", "90", "ms", "SUCCESS"))  # ms went down, but models.json says higher is better
    assert len(regressions(gate(found, "gfx942", BASE, threshold=5.0, higher_is_better=True))) == 1


def test_results_without_baseline_or_number_or_success_are_not_gated() -> None:
    found = results(
        ("rate", "1", "fps", "FAILURE"),
        ("new", "1", "ms", "SUCCESS"),
        ("slow", "oops", "ms", "SUCCESS"),
        ("same", "100", "fps", "SUCCESS"),
    )
    assert gate(found, "gfx942", BASE, threshold=0.0) == (
        Gate(),
        Gate("no baseline"),
        Gate("performance is not a number"),
        Gate("100", "+0.00%"),
    )


def test_a_result_without_metric_is_higher_is_better() -> None:
    assert regressions(gate(results(("rate", "50", "", "SUCCESS")), "gfx942", BASE, threshold=10.0)) == [
        "rate: baseline 100 , measured 50 , change -50.00% (higher is better), threshold 10%"
    ]

"""The history's pure parts: the noise rule, runs found in a perf.csv, the trend chart, scrubbed args."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_madengine.history.chart import Point, trend_svg
from pytest_madengine.history.importer import imported_runs, split_runs
from pytest_madengine.history.noise import judge, mad
from pytest_madengine.history_hooks import scrubbed_args


def test_the_allowed_change_is_the_larger_of_the_threshold_and_k_times_the_spread() -> None:
    history = [100.0, 104.0, 96.0, 102.0, 98.0]
    assert mad(history) == 2.0
    noisy = judge(95.0, history, 2.0, 3.0, lower_is_better=False)
    assert noisy is not None and (noisy.median, noisy.spread, noisy.allowed) == (100.0, 2.0, 6.0)
    assert not noisy.regression and noisy.rule.startswith("k x spread (3 x 2 = 6)")
    assert judge(93.0, history, 2.0, 3.0, lower_is_better=False).regression  # type: ignore[union-attr]
    wide = judge(93.0, history, 10.0, 3.0, lower_is_better=False)
    assert wide is not None and wide.allowed == 10.0 and not wide.regression and "threshold 10%" in wide.rule
    slower = judge(107.0, history, None, 3.0, lower_is_better=True)  # a latency: higher is worse
    assert slower is not None and slower.regression and slower.worse_by == 7.0
    assert judge(1.0, [], 5.0, 3.0, False) is None
    assert "history [100, 104, 96, 102, 98]" in noisy.message("m", "x", False)


MADENGINE_CSV = """model,n_gpus,training_precision,pipeline,args,tags,docker_file,base_docker,docker_sha,docker_image,git_commit,machine_name,gpu_architecture,performance,metric,relative_change,status,build_duration,test_duration,dataname,data_provider_type,data_size,data_download_duration,build_number
a,1,,,,,,,,img,c1,host1,gfx942,10,x,,SUCCESS,,,,,,,1
b,1,,,,,,,,img,c1,host1,gfx942,5,x,,SUCCESS,,,,,,,1
a,1,,,,,,,,img,c2,host1,gfx942,11,x,,SUCCESS,,,,,,,1
b,1,,,,,,,,img,c2,host1,gfx942,,x,,FAILURE,,,,,,,1
a,1,,,,,,,,img,c3,host1,gfx942,12,x,,SUCCESS,,,,,,,2
"""


def test_a_madengine_perf_csv_splits_into_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "perf.csv"
    path.write_text(MADENGINE_CSV)
    runs = imported_runs(path)
    assert [[r.model for r in stored] for _, stored in runs] == [["a", "b"], ["a", "b"], ["a"]]
    assert [run.git_commit for run, _ in runs] == ["c1", "c2", "c3"]
    assert [s.performance for _, stored in runs for s in stored] == [10.0, 5.0, 11.0, None, 12.0]
    starts = [run.started for run, _ in runs if run.started is not None]
    assert starts == sorted(starts) and len(set(starts)) == 3
    assert split_runs([{"model": "a", "build_number": "1"}, {"model": "b", "build_number": "2"}]) == [
        [{"model": "a", "build_number": "1"}],
        [{"model": "b", "build_number": "2"}],
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,value\nx,1\n")
    with pytest.raises(ValueError, match="lacks the model"):
        imported_runs(bad)


def test_the_trend_chart_marks_the_median_band_and_newest_point() -> None:
    svg = trend_svg("m on gfx942", [Point(10, "r1 abc"), Point(12, "r2 def"), Point(11, "r3 <x>")])
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and svg.count('class="current"') == 1
    assert "median 11" in svg and "noise band" in svg and "r3 &lt;x&gt;: 11" in svg


def test_secrets_leave_the_stored_arguments() -> None:
    args = ("-n", "4", "--registry-password", "pw1", "--token=t0k", "--madengine-storage", "postgresql://u:pw2@h/db")
    text = scrubbed_args(args)
    assert "pw1" not in text and "t0k" not in text and "pw2" not in text
    assert text == "-n 4 --registry-password *** --token=*** --madengine-storage postgresql://u:***@h/db"


def test_too_little_history_leaves_the_judgement_to_the_threshold() -> None:
    short = judge(50.0, [100.0, 101.0], None, 3.0, lower_is_better=False)
    assert short is not None and not short.regression and "threshold only" in short.rule
    assert judge(50.0, [100.0, 101.0], 5.0, 3.0, lower_is_better=False).regression  # type: ignore[union-attr]


def test_repeats_give_the_median_and_a_failed_run_the_verdict() -> None:
    from pytest_madengine.report.repeats import combined, repeat_values
    from pytest_madengine.report.results import Result
    from pytest_madengine.report.verdict import Verdict

    def run(value: str) -> Verdict:
        return Verdict((Result("m", value, "x", "SUCCESS"), Result("m_2", "1", "y", "SUCCESS")), None)

    merged = combined([run("10"), run("14"), run("11")])
    assert [(r.performance, r.extra["repeats"]) for r in merged.results] == [("11", "10,14,11"), ("1", "1,1,1")]
    assert repeat_values(merged.results[0].extra) == [10.0, 14.0, 11.0] and repeat_values({}) == []
    failed = Verdict((Result("m", "", "", "FAILURE", "exit code 3"),), "exit code 3")
    assert combined([run("10"), failed, run("12")]) is failed
    own = judge(90.0, [100.0, 100.0, 100.0], None, 3.0, lower_is_better=False, repeats=[80.0, 90.0, 100.0])
    assert own is not None and own.spread == 10.0 and not own.regression  # the repeats' own noise counts

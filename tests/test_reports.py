"""Baselines and regression gates, the terminal summary, JSON, GitHub step summary and HTML."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
from pathlib import Path

import jsonschema
import pandas
import pytest
from zoo import Zoo, read_perf

from pytest_madengine.report.baseline import compare, load_baseline, lower_is_better
from pytest_madengine.report.perfcsv import HEADER

BASE = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "--madengine-perf-csv", "perf.csv")
SCHEMA = Path(__file__).parent.parent / "pytest_madengine" / "results.schema.json"
PERF = '#!/bin/bash\necho "performance: $1 $2"\n'


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*BASE, "-p", "no:cacheprovider", *args, timeout=300)


def write_baseline(path: Path, rows: list[tuple[str, str, str]], header: tuple[str, ...] = HEADER[:-1]) -> None:
    """A madengine-style perf.csv (29 columns, no reason) with SUCCESS rows on gfx942."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, restval="")
        writer.writeheader()
        for model, perf, metric in rows:
            writer.writerow(
                {
                    "model": model,
                    "performance": perf,
                    "metric": metric,
                    "status": "SUCCESS",
                    "gpu_architecture": "gfx942",
                }
            )


@pytest.fixture
def gated(zoo: Zoo) -> Zoo:
    zoo.script("p/run.sh", PERF)
    zoo.models(
        [
            zoo.model("steady", script="scripts/p/run.sh", args="100 samples_per_second"),
            zoo.model("slower", script="scripts/p/run.sh", args="80 samples_per_second"),
            zoo.model("faster", script="scripts/p/run.sh", args="130 samples_per_second"),
            zoo.model("fresh", script="scripts/p/run.sh", args="5 samples_per_second"),
            zoo.model("lat_up", script="scripts/p/run.sh", args="120 ms"),
            zoo.model("lat_down", script="scripts/p/run.sh", args="80 ms"),
            zoo.model("declared", script="scripts/p/run.sh", args="120 widgets", higher_is_better=False),
            zoo.model("lenient", script="scripts/p/run.sh", args="80 samples_per_second", max_regression="30%"),
        ]
    )
    write_baseline(
        zoo.root / "baseline.csv",
        [
            ("slower", "1", "samples_per_second"),  # older than the row below: the latest SUCCESS row wins
            ("steady", "101", "samples_per_second"),
            ("slower", "100", "samples_per_second"),
            ("faster", "100", "samples_per_second"),
            ("lat_up", "100", "ms"),
            ("lat_down", "100", "ms"),
            ("declared", "100", "widgets"),
            ("lenient", "100", "samples_per_second"),
        ],
    )
    with (zoo.root / "baseline.csv").open("a") as handle:
        handle.write("slower,,,,,,,,,,,,,,,,gfx942,999,samples_per_second,,FAILURE,,,,,,,,\n")  # not SUCCESS: ignored
    return zoo


def test_regressions_fail_exactly_the_slower_items_with_numbers(pytester: pytest.Pytester, gated: Zoo) -> None:
    result = run(pytester, "--madengine-baseline", "baseline.csv", "--madengine-max-regression", "5%")
    result.assert_outcomes(passed=5, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*model slower on gfx942: performance regression",
            "slower: baseline 100 samples_per_second, measured 80 samples_per_second, change -20.00% (higher is better), threshold 5%",
        ]
    )
    result.stdout.fnmatch_lines(
        ["lat_up: baseline 100 ms, measured 120 ms, change +20.00% (lower is better), threshold 5%"]
    )
    result.stdout.fnmatch_lines(
        ["declared: baseline 100 widgets, measured 120 widgets, change +20.00% (lower is better)*"]
    )
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert {m for m, r in rows.items() if r["reason"] == "regression"} == {"slower", "lat_up", "declared"}
    assert all(rows[m]["status"] == "FAILURE" for m in ("slower", "lat_up", "declared"))
    assert rows["steady"]["relative_change"] == "-0.99%"
    assert rows["faster"]["relative_change"] == "+30.00%"
    assert rows["lat_down"]["relative_change"] == "-20.00%"
    assert rows["lenient"]["relative_change"] == "-20.00%" and rows["lenient"]["status"] == "SUCCESS"
    assert rows["fresh"]["relative_change"] == "" and rows["fresh"]["status"] == "SUCCESS"
    summary = result.stdout.str().split("madengine results")[1]
    lines = [line for line in summary.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert all("regression" in line for line in lines[header + 1 : header + 4]), lines
    assert any(line.startswith("fresh") and "no baseline" in line for line in lines)


def test_the_summary_respects_quiet(pytester: pytest.Pytester, gated: Zoo) -> None:
    result = run(pytester, "--madengine-baseline", "baseline.csv", "--madengine-max-regression", "5%", "-q")
    table = result.stdout.str().split("madengine results")[1]
    assert "slower" in table and "steady" not in table
    result = run(pytester, "--madengine-baseline", "baseline.csv", "-qq")
    assert "madengine results" not in result.stdout.str()


def summary_rows(output: str) -> list[str]:
    """The end-of-session table's data rows, in printed order."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("=") and " madengine results " in line)
    assert lines[start + 1].split()[:2] == ["model", "arch"], lines[start : start + 3]
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("="):
            break
        rows.append(line)
    return rows


def test_the_summary_puts_failures_and_regressions_before_passes(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """models.json lists the passing models first (and their names sort first too); the table must not."""
    zoo.script("p/run.sh", PERF)
    zoo.script("broken/run.sh", "#!/bin/bash\necho broken on purpose\nexit 3\n")
    zoo.models(
        [
            zoo.model("a_pass", script="scripts/p/run.sh", args="100 samples_per_second"),
            zoo.model("b_pass", script="scripts/p/run.sh", args="100 samples_per_second"),
            zoo.model("c_fail", script="scripts/broken/run.sh"),
            zoo.model("d_slow", script="scripts/p/run.sh", args="50 samples_per_second"),
        ]
    )
    write_baseline(
        zoo.root / "baseline.csv",
        [("b_pass", "100", "samples_per_second"), ("d_slow", "100", "samples_per_second")],
    )
    gate = ("--madengine-baseline", "baseline.csv", "--madengine-max-regression", "5%")
    result = run(pytester, *gate)
    result.assert_outcomes(passed=2, failed=2)
    rows = summary_rows(result.stdout.str())
    models = [row.split()[0] for row in rows]
    assert (sorted(models[:2]), sorted(models[2:])) == (["c_fail", "d_slow"], ["a_pass", "b_pass"]), rows
    assert ["FAILURE" in row for row in rows] == [True, True, False, False], rows
    assert ["SUCCESS" in row for row in rows] == [False, False, True, True], rows
    assert "regression" in rows[models.index("d_slow")]
    # -q: only the failures and regressions.
    quiet = summary_rows(run(pytester, *gate, "-q").stdout.str())
    assert sorted(row.split()[0] for row in quiet) == ["c_fail", "d_slow"], quiet


def test_unit_direction_and_change() -> None:
    assert lower_is_better("ms") and lower_is_better("latency_p99") and lower_is_better("s/iter")
    assert lower_is_better("seconds") and not lower_is_better("samples_per_second")
    assert not lower_is_better("tokens_per_second")
    assert lower_is_better("fps", declared=False) and not lower_is_better("ms", declared=True)
    assert compare(80, 100, lower_better=False).worse_by == pytest.approx(20)
    assert compare(80, 100, lower_better=True).worse_by == pytest.approx(-20)


def test_json_report_validates_and_keeps_extra_columns_and_perf_csv_stays_fixed(
    pytester: pytest.Pytester, zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    zoo.script(
        "multi/run.sh",
        '#!/bin/bash\nprintf "model,performance,metric,temperature,power\\n1,10,fps,40,300\\n2,20,fps,41,310\\n" > "$MAD_OUTPUT_CSV"\n',
    )
    zoo.script("p/run.sh", PERF)
    zoo.script("bad/run.sh", "#!/bin/bash\necho about to fail\nexit 9\n")
    zoo.models(
        [
            zoo.model("multi", multiple_results="m.csv"),
            zoo.model("p", script="scripts/p/run.sh", args="7 fps"),
            zoo.model("bad"),
        ]
    )
    step = pytester.path / "step_summary.md"
    step.write_text("earlier content\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    run(pytester, "--madengine-json", "results.json").assert_outcomes(passed=2, failed=1)
    run(pytester, "--madengine-json", "results2.json", "-k", "multi").assert_outcomes(passed=1)
    document = json.loads((pytester.path / "results.json").read_text())
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    results = {r["model"]: r for r in document["results"]}
    assert results["multi_1"]["extra"] == {"temperature": "40", "power": "300"}
    assert results["p"]["performance"] == 7.0
    assert "about to fail" in results["bad"]["log_tail"]
    assert document["machine"]["host"] == socket.gethostname()  # the session ran on this host
    frame = pandas.read_csv(pytester.path / "perf.csv")
    assert list(frame.columns) == list(HEADER)
    assert len(frame) == 6
    text = step.read_text()
    assert text.startswith("earlier content\n") and text.count("### pytest-madengine results") == 2
    assert "| bad | gfx942 |" in text
    baseline = load_baseline(pytester.path / "results.json")  # our JSON works as a baseline too
    assert baseline[("p", "gfx942")].performance == 7.0


def test_html_report_in_a_real_headless_browser(pytester: pytest.Pytester, gated: Zoo, tmp_path: Path) -> None:
    browser = shutil.which("chromium")
    assert browser, "Debian's chromium is required (tools/setup.sh --test installs it)"
    result = run(
        pytester,
        "--madengine-baseline",
        "baseline.csv",
        "--madengine-max-regression",
        "5%",
        "--madengine-html",
        "report.html",
    )
    result.assert_outcomes(passed=5, failed=3)
    page = pytester.path / "report.html"
    text = page.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-ready="1"' in dom.stdout, dom.stderr[-2000:]
    assert dom.stdout.count('data-result="1"') == 8
    assert dom.stdout.count('class="bar"') == 8 and dom.stdout.count('class="baseline"') == 7
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

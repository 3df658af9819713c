"""The results history through pytest: autosave, the noise gate against a fixed one, and the
`pytest-madengine` console script on a madengine perf.csv."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import docker
import jsonschema
import pytest
from zoo import EngineEvents, Zoo, read_perf, run_id_of, wait_until

SCHEMA = Path(__file__).parent.parent / "pytest_madengine" / "results.schema.json"

ARGS = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "-p", "no:cacheprovider")
VALUE = '#!/bin/bash\necho "performance: $VALUE samples_per_second"\n'


def noisy_values(count: int) -> list[float]:
    draw = random.Random(7)
    return [round(draw.uniform(93, 107), 1) for _ in range(count)]


def session(pytester: pytest.Pytester, value: float, *extra: str) -> pytest.RunResult:
    context = json.dumps({"docker_env_vars": {"VALUE": f"{value:g}"}})
    return pytester.runpytest_subprocess(*ARGS, "--madengine-context", context, *extra, timeout=300)


def test_the_noise_gate_passes_a_noisy_model_a_fixed_gate_fails_and_a_true_drop_fails_at_once(
    pytester: pytest.Pytester, zoo: Zoo
) -> None:
    zoo.script("noisy/run.sh", VALUE)
    zoo.models([zoo.model("noisy")])
    storage = f"sqlite:///{pytester.path / 'history.db'}"
    values = noisy_values(20)
    for value in values:  # the noise gate (k = 3 x MAD of the last 5): every session passes
        session(pytester, value, "--madengine-storage", storage, "--madengine-autosave").assert_outcomes(passed=1)
    # The same values under a fixed 5% gate against the previous session: one of them fails it.
    assert session(pytester, values[0], "--madengine-perf-csv", "fixed.csv").ret == pytest.ExitCode.OK
    gate = ("--madengine-baseline", "fixed.csv", "--madengine-max-regression", "5", "--madengine-perf-csv", "fixed.csv")
    fixed = [session(pytester, value, *gate).ret for value in values[1:6]]
    assert pytest.ExitCode.TESTS_FAILED in fixed
    history = values[-5:]
    median = sorted(history)[2]
    reports = ("--madengine-json", "r.json", "--madengine-html", "r.html")
    drop = session(pytester, round(median * 0.8, 1), "--madengine-storage", storage, "--madengine-autosave", *reports)
    drop.assert_outcomes(failed=1)
    drop.stdout.fnmatch_lines(
        [
            f"*history [[]{', '.join(f'{v:g}' for v in history)}[]]*median {median:g}, spread (MAD)*measured {median * 0.8:.1f}*"
        ]
    )
    rows = read_perf(pytester.path / "perf.csv")
    assert [r["status"] for r in rows] == ["SUCCESS"] * 20 + ["FAILURE"] and rows[-1]["reason"] == "regression"
    document = json.loads((pytester.path / "r.json").read_text())
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    (found,) = document["results"]
    assert found["comparison"]["history"] == history and found["comparison"]["median"] == median
    assert found["comparison"]["verdict"] == "regression" and found["comparison"]["rule"].startswith("k x spread")
    check_trend_in_a_browser(pytester.path / "r.html", pytester.path / "profile", len(values) + 1)
    listed = cli(pytester.path, "--storage", storage, "list")
    assert listed.stdout.count("import") == 0 and len(listed.stdout.splitlines()) == 1 + 21


def test_a_history_that_cannot_be_read_is_a_usage_error_without_a_traceback(
    pytester: pytest.Pytester, zoo: Zoo
) -> None:
    import sqlite3

    zoo.script("noisy/run.sh", VALUE)
    zoo.models([zoo.model("noisy")])
    path = pytester.path / "history.db"
    # The schema at its newest revision (made in a process of its own: SQLAlchemy loaded in this one
    # would leave with pytester's restored sys.modules, and come back warning) ...
    assert cli(pytester.path, "--storage", f"sqlite:///{path}", "list").returncode == 0
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE results")  # ... but a table gone
    result = session(pytester, 100, "--madengine-storage", f"sqlite:///{path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--madengine-storage: history storage sqlite:///*reading the history:*results*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


WORKER_MODULES = """
import sys
from pathlib import Path

def pytest_sessionfinish(session):
    worker = getattr(session.config, "workerinput", {}).get("workerid")
    if worker:
        found = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic"))
        Path(f"modules-{worker}.txt").write_text(" ".join(found))
"""


def test_under_xdist_the_gate_reads_the_history_the_controller_hands_its_workers(
    pytester: pytest.Pytester, zoo: Zoo
) -> None:
    zoo.script("noisy/run.sh", VALUE)
    zoo.models([zoo.model("noisy"), zoo.model("other", script="scripts/noisy/run.sh")])
    storage = ("--madengine-storage", f"sqlite:///{pytester.path / 'history.db'}", "--madengine-autosave")
    for value in (100, 101, 99):
        session(pytester, value, *storage).assert_outcomes(passed=2)
    pytester.makeconftest(WORKER_MODULES)
    drop = session(pytester, 80, *storage, "-n", "2")
    drop.assert_outcomes(failed=2)
    drop.stdout.fnmatch_lines(["*history [[]100, 101, 99[]]*median 100*measured 80*"])
    modules = {p.name: p.read_text() for p in pytester.path.glob("modules-gw*.txt")}
    assert modules == {"modules-gw0.txt": "", "modules-gw1.txt": ""}  # the workers never opened the database


def check_trend_in_a_browser(page: Path, profile: Path, points: int) -> None:
    """The report's trend chart as Chromium renders it: the newest point highlighted among `points`,
    each earlier one naming its run on hover; no console error; nothing fetched from the network."""
    browser = shutil.which("chromium")
    assert browser, "Debian's chromium is required (tools/setup.sh --test installs it)"
    text = page.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    flags += [f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-ready="1"' in dom.stdout, dom.stderr[-2000:]
    figure = dom.stdout[dom.stdout.index('<figure class="trend" data-model="noisy"') :]
    figure = figure[: figure.index("</figure>")]
    assert figure.count("<circle") == points and figure.count('class="current"') == 1
    assert "this session" in figure and "noise band" in figure and "median" in figure
    assert [line for line in dom.stderr.splitlines() if "CONSOLE" in line] == []


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest_madengine.history.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


MADENGINE_CSV = """model,n_gpus,training_precision,pipeline,args,tags,docker_file,base_docker,docker_sha,docker_image,git_commit,machine_name,gpu_architecture,performance,metric,relative_change,status,build_duration,test_duration,dataname,data_provider_type,data_size,data_download_duration,build_number
resnet,8,fp16,,,,,,,img,aaa111,mi300,gfx942,1000,samples_per_second,,SUCCESS,,,,,,,0
bert,8,fp16,,,,,,,img,aaa111,mi300,gfx942,50,samples_per_second,,SUCCESS,,,,,,,0
resnet,8,fp16,,,,,,,img,bbb222,mi300,gfx942,1100,samples_per_second,,SUCCESS,,,,,,,0
bert,8,fp16,,,,,,,img,bbb222,mi300,gfx942,40,samples_per_second,,SUCCESS,,,,,,,0
resnet,8,fp16,,,,,,,img,ccc333,mi300,gfx942,990,samples_per_second,,SUCCESS,,,,,,,0
bert,8,fp16,,,,,,,img,ccc333,mi300,gfx942,,samples_per_second,,FAILURE,,,,,,,0
"""


def test_import_then_trend_and_compare_give_the_numbers_of_the_file(tmp_path: Path) -> None:
    (tmp_path / "perf.csv").write_text(MADENGINE_CSV)
    done = cli(tmp_path, "import", "perf.csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("imported 3 runs, 6 results")
    again = cli(tmp_path, "import", "perf.csv")
    assert "imported 0 runs" in again.stdout and "(3 already there)" in again.stdout
    assert (tmp_path / ".madengine" / "history.db").is_file()  # the embedded default
    runs = [line.split()[0] for line in cli(tmp_path, "list").stdout.splitlines()[1:]]
    assert len(runs) == 3
    trend = cli(tmp_path, "trend", "resnet", "--chart", "resnet.svg")
    assert trend.returncode == 0, trend.stderr
    assert [line.split()[1] for line in trend.stdout.splitlines()[1:4]] == ["1000", "1100", "990"]
    assert "median 1000, spread (MAD) 10, n=3" in trend.stdout
    svg = (tmp_path / "resnet.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and "ccc333" in svg
    compared = cli(tmp_path, "compare", runs[0], runs[1]).stdout.splitlines()
    assert compared[1].split() == ["resnet", "gfx942", "1000", "1100", "samples_per_second", "+10.00%"]
    assert compared[2].split() == ["bert", "gfx942", "50", "40", "samples_per_second", "-20.00%"]
    shown = cli(tmp_path, "show", runs[2]).stdout
    assert "990" in shown and "FAILURE" in shown
    missing = cli(tmp_path, "show", "nope")
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr and "Traceback" not in missing.stderr


# Each run counts itself in a folder the context mounts; the 2nd run fails when FAIL_AT says so.
COUNTING = """#!/bin/bash
n=$(( $(cat /counter/n 2>/dev/null || echo 0) + 1 )); echo $n > /counter/n
[ "$n" = "${FAIL_AT:-}" ] && { echo "run $n gives up"; exit 3; }
echo "performance: $((10 + n)) samples_per_second"
"""


def test_repeat_runs_fresh_containers_and_reports_the_median(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("counting/run.sh", COUNTING)
    zoo.models([zoo.model("counting")])
    counter = pytester.path / "counter"
    counter.mkdir()
    storage = f"sqlite:///{pytester.path / 'history.db'}"
    context = json.dumps({"docker_mounts": {"/counter": str(counter)}})
    args = (*ARGS, "--madengine-context", context, "--madengine-repeat", "3", "--madengine-json", "r.json")
    with EngineEvents(docker_client) as events:
        result = pytester.runpytest_subprocess(
            *args, "--madengine-storage", storage, "--madengine-autosave", timeout=300
        )
        run_id = run_id_of(pytester.path)
        wait_until(lambda: len(events.of_run(run_id, "destroy")) == 3, 60, "three containers gone")
    result.assert_outcomes(passed=1)
    created = events.of_run(run_id, "create")
    died = events.of_run(run_id, "die")
    assert len({e["id"] for e in created}) == 3  # a fresh container each time, one after another
    assert all(d["timeNano"] <= c["timeNano"] for d, c in zip(died, created[1:], strict=False))
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["performance"]) == ("SUCCESS", "12")
    (found,) = json.loads((pytester.path / "r.json").read_text())["results"]
    assert found["extra"]["repeats"] == "11,12,13"
    logs = sorted(p.name for p in (pytester.path / "madengine_logs").glob("counting_*.log"))
    assert [n.split(".gfx942")[1] for n in logs] == [".repeat2.run.log", ".repeat3.run.log", ".run.log"]
    listed = cli(pytester.path, "--storage", storage, "show", run_id)
    assert "12" in listed.stdout
    (counter / "n").write_text("0")
    failing = json.dumps({"docker_mounts": {"/counter": str(counter)}, "docker_env_vars": {"FAIL_AT": "2"}})
    again = pytester.runpytest_subprocess(*ARGS, "--madengine-context", failing, "--madengine-repeat", "3", timeout=300)
    again.assert_outcomes(failed=1)
    assert read_perf(pytester.path / "perf.csv")[-1]["reason"] == "exit code 3"
    assert (counter / "n").read_text().strip() == "2"  # the third run never started

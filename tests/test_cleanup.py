"""Timeouts, interruptions and cleanup, against the real engine, through pytest subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from filelock import FileLock
from zoo import (
    EngineRelay,
    Zoo,
    kill_session,
    labelled_containers,
    read_perf,
    remove_run,
    run_id_of,
    start_session,
    wait_until,
)

BASE = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "--madengine-perf-csv", "perf.csv")
RUN_LABEL = "pytest-madengine.run"
KEPT_LABEL = "pytest-madengine.kept"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*BASE, "-p", "no:cacheprovider", *args, timeout=300)


@pytest.fixture
def slow_zoo(zoo: Zoo) -> Zoo:
    zoo.script("slow/run.sh", "#!/bin/bash\necho started\nsleep 120\necho 'performance: 1 x'\n")
    zoo.script("quick/run.sh")
    return zoo


def _records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a recorder conftest wrote (none when it never ran)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _remove_kept(client: docker.DockerClient, run_id: str) -> None:
    """Kept copies of one run, and the images they were frozen into."""
    for container in client.api.containers(all=True, filters={"label": f"{KEPT_LABEL}={run_id}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.api.remove_container(container["Id"], force=True)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.images.remove(container["ImageID"], force=True)


def _start(pytester: pytest.Pytester, *args: str) -> subprocess.Popen[str]:
    return start_session(pytester.path, *BASE, "-p", "no:cacheprovider", *args)


def _failure_section(out: str, title: str) -> str:
    """The text of one item's failure report: from its `____ title ____` line to the next section."""
    match = re.search(rf"^_+ {re.escape(title)} _+$\n(.*?)(?=^_+ .* _+$|^=+ .* =+$)", out, re.M | re.S)
    assert match, f"no failure section for {title}:\n{out}"
    return match.group(1)


# A conftest for the sessions under test: at each item's start (setup done) and end (teardown
# done), the engine's list of this run's containers, by test label. The run id comes from
# run_probe's file beside it.
END_OF_TEST_RECORDER = """
import json
from pathlib import Path

import docker
import pytest

HERE = Path(__file__).parent


def _this_run():
    run_id = (HERE / "madengine-run-id").read_text()
    client = docker.from_env()
    try:
        found = client.api.containers(all=True, filters={"label": f"pytest-madengine.run={run_id}"})
    finally:
        client.close()
    return sorted(c["Labels"]["pytest-madengine.test"] for c in found)


def _record(**fields):
    with open(HERE / "containers.jsonl", "a") as handle:
        handle.write(json.dumps(fields) + "\\n")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    _record(test=item.nodeid, when="call", containers=_this_run())


def pytest_runtest_logfinish(nodeid, location):
    _record(test=nodeid, when="end", containers=_this_run())
"""


def test_each_container_is_removed_when_its_test_ends(pytester: pytest.Pytester, slow_zoo: Zoo) -> None:
    """Passed, failed or timed out: the item's container is gone from the engine as soon as its
    test ends, before the next item starts and long before the session's final sweep."""
    slow_zoo.script("bad/run.sh", "#!/bin/bash\nexit 3\n")
    slow_zoo.models([slow_zoo.model("quick"), slow_zoo.model("bad"), slow_zoo.model("slow", timeout=1)])
    pytester.makeconftest(END_OF_TEST_RECORDER)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*model bad on gfx942 failed: exit code 3*"])
    result.stdout.fnmatch_lines(["*model slow on gfx942 failed: timed out after 1 s*"])
    seen = [(r["test"], r["when"], r["containers"]) for r in _records(pytester.path / "containers.jsonl")]
    assert seen == [
        ("models.json::quick[gfx942]", "call", ["models.json::quick[gfx942]"]),
        ("models.json::quick[gfx942]", "end", []),
        ("models.json::bad[gfx942]", "call", ["models.json::bad[gfx942]"]),
        ("models.json::bad[gfx942]", "end", []),
        ("models.json::slow[gfx942]", "call", ["models.json::slow[gfx942]"]),
        ("models.json::slow[gfx942]", "end", []),
    ]


# A conftest for the xdist controller: when a worker goes down with an error, after the plugin's
# own hook (trylast), what the engine still holds of that worker's containers in this run.
NODE_DOWN_RECORDER = """
import json
from pathlib import Path

import docker
import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(trylast=True, optionalhook=True)
def pytest_testnodedown(node, error):
    if error is None:
        return
    worker = node.workerinput["workerid"]
    run_id = (HERE / "madengine-run-id").read_text()
    client = docker.from_env()
    try:
        labels = [f"pytest-madengine.run={run_id}", f"pytest-madengine.worker={worker}"]
        left = [c["Id"] for c in client.api.containers(all=True, filters={"label": labels})]
    finally:
        client.close()
    with open(HERE / "node-down.jsonl", "a") as handle:
        handle.write(json.dumps({"worker": worker, "left": left}) + "\\n")
"""


def test_the_controller_removes_a_crashed_workers_containers(
    pytester: pytest.Pytester, slow_zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    """A worker killed with SIGKILL cannot remove its container; the controller does, as soon as
    it sees the worker go down (not only in the session's final sweep)."""
    slow_zoo.models([slow_zoo.model("slow"), slow_zoo.model("quick")])
    pytester.makeconftest(NODE_DOWN_RECORDER)
    proc = _start(pytester, "-n", "2")
    run_id = ""
    try:
        run_id = run_id_of(pytester.path)
        victim: list[dict[str, Any]] = []

        def slow_is_running() -> bool:
            victim[:] = [
                c
                for c in labelled_containers(docker_client, run_id)
                if c["Labels"]["pytest-madengine.test"] == "models.json::slow[gfx942]" and c["State"] == "running"
            ]
            return bool(victim)

        wait_until(slow_is_running, 90, "the slow model's container running")
        (container,) = victim
        worker = container["Labels"]["pytest-madengine.worker"]
        os.kill(int(container["Labels"]["pytest-madengine.pid"]), signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
        # Judged while the session ran: when the controller saw the worker down, its container was gone.
        assert _records(pytester.path / "node-down.jsonl") == [{"worker": worker, "left": []}], out
        assert labelled_containers(docker_client, run_id) == []
    finally:
        kill_session(proc)
        if run_id:
            remove_run(docker_client, run_id)


def test_default_limit_from_ini(pytester: pytest.Pytester, slow_zoo: Zoo) -> None:
    slow_zoo.models([slow_zoo.model("slow")])
    pytester.makeini("[pytest]\nmadengine_timeout = 1\n")
    result = run(pytester)
    result.stdout.fnmatch_lines(["*timed out after 1 s (limit from default)*"])


def test_timeout_minus_one_means_the_default(pytester: pytest.Pytester, slow_zoo: Zoo) -> None:
    """madengine's `--timeout -1`: a model without its own timeout gets the default (7200 s, else the
    ini's limit); one with its own keeps it."""
    slow_zoo.models([slow_zoo.model("slow"), slow_zoo.model("quick", timeout=33)])
    items, _ = pytester.inline_genitems(*BASE, "--madengine-timeout", "-1")
    marks = {item.name: item.get_closest_marker("timeout") for item in items}
    assert {name: mark.args if mark else None for name, mark in marks.items()} == {
        "slow[gfx942]": (7200,),
        "quick[gfx942]": (33,),
    }
    pytester.makeini("[pytest]\nmadengine_timeout = 1\n")
    result = run(pytester, "--madengine-timeout", "-1", "-k", "slow")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*model slow on gfx942 failed: timed out after 1 s (limit from default)*"])


def test_ini_timeout_zero_means_no_limit(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """`madengine_timeout = 0`: no limit at all (not 0 s, nor the 7200 s default): the item carries
    no timeout mark, and a model longer than a small limit runs to its end."""
    zoo.script("three/run.sh", "#!/bin/bash\nsleep 3\necho 'performance: 3 seconds'\n")
    zoo.models([zoo.model("three")])
    pytester.makeini("[pytest]\nmadengine_timeout = 0\n")
    (item,), _ = pytester.inline_genitems(*BASE)
    assert item.get_closest_marker("timeout") is None
    result = run(pytester)
    result.assert_outcomes(passed=1)
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["performance"], row["metric"]) == ("SUCCESS", "3", "seconds")


@pytest.mark.parametrize(
    "mode",
    [
        ("-p", "no:timeout"),
        ("--timeout-method=signal",),
        ("--timeout-method=thread",),
        ("--timeout=1", "--timeout-method=thread"),
    ],
)
def test_limit_holds_with_and_without_pytest_timeout(
    pytester: pytest.Pytester, slow_zoo: Zoo, docker_client: docker.DockerClient, mode: tuple[str, ...]
) -> None:
    slow_zoo.models([slow_zoo.model("slow", timeout=2), slow_zoo.model("quick")])
    result = run(pytester, *mode)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*model slow on gfx942 failed: timed out after 2 s (limit from models.json)*", "started"]
    )
    result.stdout.fnmatch_lines(["*1 failed, 1 passed*"])
    # Our deadline, not pytest-timeout's: no "Timeout" banner, dump or `Failed: Timeout` anywhere in
    # the item's failure, and none of pytest-timeout's stack dumps on stderr.
    section = _failure_section(result.stdout.str(), "slow[gfx942]")
    assert section.splitlines()[0] == "model slow on gfx942 failed: timed out after 2 s (limit from models.json)"
    assert "Timeout" not in section, section
    assert "Timeout" not in result.stderr.str(), result.stderr.str()
    assert labelled_containers(docker_client, run_id_of(pytester.path)) == []


def test_items_carry_the_timeout_mark(pytester: pytest.Pytester, slow_zoo: Zoo) -> None:
    slow_zoo.models([slow_zoo.model("slow", timeout=33)])
    items, _ = pytester.inline_genitems(*BASE)
    (item,) = items
    mark = item.get_closest_marker("timeout")
    assert mark is not None
    assert mark.args == (33,)


INTERRUPT_BANNER = {
    signal.SIGINT: "KeyboardInterrupt",
    signal.SIGTERM: "KeyboardInterrupt: received signal SIGTERM",
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("workers", [(), ("-n", "4")])
def test_interrupt_removes_every_container_and_keeps_finished_rows(
    pytester: pytest.Pytester,
    slow_zoo: Zoo,
    docker_client: docker.DockerClient,
    sig: signal.Signals,
    workers: tuple[str, ...],
) -> None:
    models = [slow_zoo.model(f"quick{i}", script="scripts/quick/run.sh") for i in range(2)]
    models += [slow_zoo.model(f"slow{i}", script="scripts/slow/run.sh") for i in range(4 if workers else 1)]
    slow_zoo.models(models)
    proc = _start(pytester, *workers)
    run_id = ""
    try:
        run_id = run_id_of(pytester.path)
        perf = pytester.path / "perf.csv"
        # Under -n 4 one worker may hold two slow models in its queue: three run at once at least.
        running = 3 if workers else 1

        def quick_done_and_slow_running() -> bool:
            up = [c for c in labelled_containers(docker_client, run_id) if c["State"] == "running"]
            return perf.exists() and len(read_perf(perf)) >= 2 and len(up) >= running

        wait_until(quick_done_and_slow_running, 90, "the quick rows written and the slow models running")
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
        assert labelled_containers(docker_client, run_id) == [], out
        rows = {r["model"]: r["status"] for r in read_perf(perf)}
        assert rows == {"quick0": "SUCCESS", "quick1": "SUCCESS"}
        # pytest's own summary, as for Ctrl-C: the interrupt banner naming the signal, then the counts.
        banners = [line.strip("! ") for line in out.splitlines() if re.fullmatch(r"!+ .* !+", line)]
        assert banners == [INTERRUPT_BANNER[sig]], out
        assert re.fullmatch(r"=+ 2 passed in [\d.]+s(?: \([\d:]+\))? =+", out.splitlines()[-1]), out
    finally:
        kill_session(proc)
        if run_id:
            remove_run(docker_client, run_id)


def test_unreachable_daemon_is_one_clear_error(
    pytester: pytest.Pytester, slow_zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_zoo.models([slow_zoo.model(f"q{i}", script="scripts/quick/run.sh") for i in range(3)])
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-such-docker.sock")
    for extra in ((), ("-n", "2")):
        result = run(pytester, *extra)
        out = result.stdout.str() + result.stderr.str()
        assert out.count("cannot reach the Docker daemon") == 1, out
        assert "DOCKER_HOST" in out and "no-such-docker.sock" in out
        assert "Traceback" not in out
        assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_container_that_cannot_start_errors_with_dockers_reason(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.dockerfile("nobash", body="FROM pytest-madengine/busybox:latest\nRUN rm /bin/bash\n")
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m", dockerfile="docker/nobash")])
    pytester.makeconftest(END_OF_TEST_RECORDER)
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of m[[]gfx942[]]*", "*bash*"])
    assert "Traceback" not in result.stdout.str()
    assert read_perf(pytester.path / "perf.csv")[0]["status"] == "FAILURE"
    # Nothing is left of the refused container, already when its test ends.
    ends = [r["containers"] for r in _records(pytester.path / "containers.jsonl") if r["when"] == "end"]
    assert ends == [[]]


def test_leftovers_of_dead_runs_are_reported_and_reaped(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    # A pid above the kernel's limit: no process has it, now or later.
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    # --madengine-reap is engine-wide by design: a suite running beside this one must not reap our
    # leftover between its creation and our checks, so the two suites take turns here.
    with FileLock(os.path.join(tempfile.gettempdir(), "pytest-madengine-tests-reap.lock")):
        leftover = docker_client.containers.create(
            "pytest-madengine/busybox:latest",
            ["sleep", "600"],
            labels={
                RUN_LABEL: uuid.uuid4().hex[:12],
                "pytest-madengine.session-pid": str(dead_pid),
                "pytest-madengine.host": socket.gethostname(),
            },
        )
        assert leftover.id is not None
        try:
            _report_and_reap(pytester, docker_client, leftover.id)
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                leftover.remove(force=True)


def _report_and_reap(pytester: pytest.Pytester, docker_client: docker.DockerClient, leftover: str) -> None:
    # Other runs may have left orphans of their own on this engine: ours is counted among them.
    result = run(pytester, "-k", "nothing")
    found = re.search(
        r"^madengine: (\d+) container\(s\) left by earlier runs whose pytest is gone .*--madengine-reap",
        result.stdout.str(),
        re.M,
    )
    assert found and int(found.group(1)) >= 1, result.stdout.str()
    assert docker_client.containers.get(leftover)  # reported, not removed
    result = run(pytester, "-k", "nothing", "--madengine-reap")
    result.stdout.re_match_lines([r"madengine: removed \d+ container\(s\) left by earlier runs whose pytest is gone"])
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(leftover)


def _assert_only_kept(client: docker.DockerClient, run_id: str, hint: str) -> None:
    """The hinted container is the run's one kept copy, running, with the model's files; nothing
    else of the run is left."""
    kept = client.api.containers(all=True, filters={"label": f"{KEPT_LABEL}={run_id}"})
    assert [(c["Id"][:12], c["State"]) for c in kept] == [(hint, "running")]
    code, output = client.containers.get(hint).exec_run(["cat", "clue.txt"])
    assert isinstance(output, bytes)  # not streamed
    assert (code, output.strip()) == (0, b"evidence")
    assert labelled_containers(client, run_id) == []


def _kept_hint(out: str, nodeid: str) -> str:
    """The container id in the printed `docker exec -it <id> bash` hint for one item."""
    found = re.findall(rf"kept the container of {re.escape(nodeid)} for inspection: docker exec -it (\w+) bash", out)
    assert len(found) == 1, out
    return str(found[0])


@pytest.fixture
def run_keeping(
    pytester: pytest.Pytester, docker_client: docker.DockerClient
) -> Iterator[Callable[..., tuple[pytest.RunResult, str]]]:
    """Run a session that keeps containers; its kept copies (and their images) go when the test ends."""
    runs: list[str] = []

    def session(*args: str) -> tuple[pytest.RunResult, str]:
        result = run(pytester, *args)
        runs.append(run_id_of(pytester.path))
        return result, runs[-1]

    yield session
    for run_id in runs:
        _remove_kept(docker_client, run_id)


def test_keep_containers_on_failure_prints_a_working_exec_command(
    zoo: Zoo, docker_client: docker.DockerClient, run_keeping: Callable[..., tuple[pytest.RunResult, str]]
) -> None:
    zoo.script("bad/run.sh", "#!/bin/bash\necho evidence > clue.txt\nexit 7\n")
    zoo.script("good/run.sh")
    zoo.models([zoo.model("bad"), zoo.model("good")])
    result, run_id = run_keeping("--madengine-keep-containers", "on-failure")
    result.assert_outcomes(passed=1, failed=1)
    hint = _kept_hint(result.stdout.str(), "models.json::bad[gfx942]")
    assert "kept the container of models.json::good" not in result.stdout.str()
    _assert_only_kept(docker_client, run_id, hint)


def test_keep_containers_always_keeps_a_passing_models_container(
    zoo: Zoo, docker_client: docker.DockerClient, run_keeping: Callable[..., tuple[pytest.RunResult, str]]
) -> None:
    zoo.script("good/run.sh", "#!/bin/bash\necho evidence > clue.txt\necho 'performance: 1 x'\n")
    zoo.models([zoo.model("good")])
    result, run_id = run_keeping("--madengine-keep-containers", "always")
    result.assert_outcomes(passed=1)
    hint = _kept_hint(result.stdout.str(), "models.json::good[gfx942]")
    _assert_only_kept(docker_client, run_id, hint)


def test_a_kept_copy_sees_the_shared_scripts_read_only(
    zoo: Zoo, docker_client: docker.DockerClient, run_keeping: Callable[..., tuple[pytest.RunResult, str]]
) -> None:
    """The kept copy is a commit, which leaves bind mounts out: it gets the read-only scripts/ mount again."""
    zoo.script("common/lib.sh", "value=from_common\n")
    zoo.script("bad/run.sh", "#!/bin/bash\n. ../scripts/common/lib.sh\necho $value > clue.txt\nexit 7\n")
    zoo.models([zoo.model("bad")])
    before = sorted(p.relative_to(zoo.root) for p in (zoo.root / "scripts").rglob("*"))
    result, _ = run_keeping("--madengine-keep-containers", "on-failure")
    result.assert_outcomes(failed=1)
    kept = docker_client.containers.get(_kept_hint(result.stdout.str(), "models.json::bad[gfx942]"))
    code, output = kept.exec_run(["sh", "-c", ". ../scripts/common/lib.sh && echo $value $(cat clue.txt)"])
    assert isinstance(output, bytes)  # not streamed
    assert (code, output.strip()) == (0, b"from_common from_common")
    code, output = kept.exec_run(["sh", "-c", "grep ' /myworkspace/scripts ' /proc/mounts | cut -d' ' -f4"])
    assert isinstance(output, bytes)
    assert code == 0 and output.split(b",")[0] == b"ro", output
    code, _ = kept.exec_run(["sh", "-c", "echo leak > /myworkspace/scripts/common/leak.txt"])
    assert code != 0
    assert sorted(p.relative_to(zoo.root) for p in (zoo.root / "scripts").rglob("*")) == before


def test_daemon_dying_mid_run_fails_running_items_and_ends_the_session(
    pytester: pytest.Pytester, slow_zoo: Zoo, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_zoo.models([slow_zoo.model("slow")])
    # Build the image through the real socket first: the proxied session then only runs.
    run(pytester, "--madengine-build-only").assert_outcomes(passed=1)
    engine = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert engine.startswith("unix://"), "the relay cuts a unix-socket connection to the engine"
    proxy = EngineRelay.unix(pytester.path / "d.sock")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/d.sock")
    proc = _start(pytester)
    run_id = ""
    try:
        run_id = run_id_of(pytester.path)
        # The model runs and the plugin waits on it: its /wait request (the Docker API call that blocks
        # while a container runs) went through the relay, so cutting the relay now is "mid-run".
        wait_until(
            lambda: (
                [c["State"] for c in labelled_containers(docker_client, run_id)] == ["running"] and proxy.saw(b"/wait")
            ),
            90,
            "the model running and waited on",
        )
        proxy.close()
        out, _ = proc.communicate(timeout=120)
    finally:
        proxy.close()
        kill_session(proc)
        if run_id:
            remove_run(docker_client, run_id)
    assert "lost the connection to the Docker daemon" in out, out
    assert re.fullmatch(r"=+ 1 failed in [\d.]+s(?: \([\d:]+\))? =+", out.splitlines()[-1]), out
    assert "Traceback" not in out
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["reason"]) == ("FAILURE", "docker connection lost")


def test_a_killed_sessions_shared_directory_goes_with_the_next_session(
    pytester: pytest.Pytester, slow_zoo: Zoo, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_zoo.models([slow_zoo.model("slow")])
    scratch = pytester.path / "scratch"  # the sessions' temp dir: only theirs is in it
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    session = _start(pytester)
    run_id = ""
    try:
        run_id = run_id_of(pytester.path)
        wait_until(lambda: labelled_containers(docker_client, run_id) != [], 120, "the model running")
        os.killpg(session.pid, signal.SIGKILL)  # no teardown, no unconfigure: nothing of ours cleans up
        session.wait(timeout=60)
    finally:
        kill_session(session)
        if run_id:
            remove_run(docker_client, run_id)
    (left,) = scratch.glob(f"pytest-madengine-{run_id}-*")
    run(pytester, "-k", "nothing")
    assert not left.exists()
    assert list(scratch.glob("pytest-madengine-*")) == []  # the new session's own went at its end

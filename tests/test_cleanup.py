"""Timeouts, interruptions and cleanup, against the real engine, through pytest subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import pytest
from zoo import Zoo, labelled_containers, read_perf

BASE = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "--madengine-perf-csv", "perf.csv")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*BASE, "-p", "no:cacheprovider", *args, timeout=300)


@pytest.fixture
def slow_zoo(zoo: Zoo) -> Zoo:
    zoo.script("slow/run.sh", "#!/bin/bash\necho started\nsleep 120\necho 'performance: 1 x'\n")
    zoo.script("quick/run.sh")
    return zoo


def test_default_limit_from_ini(pytester: pytest.Pytester, slow_zoo: Zoo) -> None:
    slow_zoo.models([slow_zoo.model("slow")])
    pytester.makeini("[pytest]\nmadengine_timeout = 1\n")
    result = run(pytester)
    result.stdout.fnmatch_lines(["*timed out after 1 s (limit from default)*"])


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
    started = time.monotonic()
    result = run(pytester, *mode)
    assert time.monotonic() - started < 60
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*model slow on gfx942 failed: timed out after 2 s (limit from models.json)*", "started"]
    )
    result.stdout.fnmatch_lines(["*1 failed, 1 passed*"])
    assert "Timeout" not in result.stdout.str().split("short test summary")[0].split("FAILURES")[-1].split("\n")[1]
    assert labelled_containers(docker_client) == []


def test_items_carry_the_timeout_mark(pytester: pytest.Pytester, slow_zoo: Zoo) -> None:
    slow_zoo.models([slow_zoo.model("slow", timeout=33)])
    items, _ = pytester.inline_genitems(*BASE)
    (item,) = items
    assert item.get_closest_marker("timeout").args == (33,)


def _start(pytester: pytest.Pytester, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *BASE, "-p", "no:cacheprovider", *args],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for(predicate: object, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


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
    perf = pytester.path / "perf.csv"
    running = 4 if workers else 1
    _wait_for(
        lambda: perf.exists() and len(read_perf(perf)) >= 2 and len(labelled_containers(docker_client)) >= running - 1
    )
    os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert labelled_containers(docker_client) == [], out
    rows = {r["model"]: r["status"] for r in read_perf(perf)}
    assert rows["quick0"] == rows["quick1"] == "SUCCESS"
    assert "Interrupted" in out or "KeyboardInterrupt" in out, out
    assert "passed" in out.splitlines()[-1], out


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
        assert result.ret != 0


def test_container_that_cannot_start_errors_with_dockers_reason(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.dockerfile("nobash", body="FROM pytest-madengine/busybox:latest\nRUN rm /bin/bash\n")
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m", dockerfile="docker/nobash")])
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of m[[]gfx942[]]*", "*bash*"])
    assert "Traceback" not in result.stdout.str()
    assert read_perf(pytester.path / "perf.csv")[0]["status"] == "FAILURE"
    assert labelled_containers(docker_client) == []


def test_leftovers_of_dead_runs_are_reported_and_reaped(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = docker_client.containers.create(
        "pytest-madengine/busybox:latest",
        ["sleep", "600"],
        labels={
            "pytest-madengine.run": "deadbeef0000",
            "pytest-madengine.session-pid": str(dead.pid),
            "pytest-madengine.host": socket.gethostname(),
        },
    )
    try:
        result = run(pytester, "-k", "nothing")
        result.stdout.fnmatch_lines(
            ["madengine: 1 container(s) left by earlier runs whose pytest is gone*--madengine-reap*"]
        )
        assert docker_client.containers.get(leftover.id)
        result = run(pytester, "-k", "nothing", "--madengine-reap")
        result.stdout.fnmatch_lines(["madengine: removed 1 container(s) left by earlier runs whose pytest is gone"])
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(leftover.id)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            leftover.remove(force=True)


def test_keep_containers_on_failure_prints_a_working_exec_command(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("bad/run.sh", "#!/bin/bash\necho evidence > clue.txt\nexit 7\n")
    zoo.script("good/run.sh")
    zoo.models([zoo.model("bad"), zoo.model("good")])
    result = run(pytester, "--madengine-keep-containers", "on-failure")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*kept the container of models.json::bad[[]gfx942[]] for inspection: docker exec -it * bash*"]
    )
    kept = docker_client.containers.list(filters={"label": "pytest-madengine.kept"})
    try:
        assert len(kept) == 1
        code, output = kept[0].exec_run(["cat", "clue.txt"])
        assert (code, output.strip()) == (0, b"evidence")
        assert labelled_containers(docker_client) == []
    finally:
        for container in kept:
            image = container.image
            container.remove(force=True)
            docker_client.images.remove(image.id, force=True)


class _Proxy:
    """A unix-socket relay to the real engine that a test can pull the plug on."""

    def __init__(self, path: Path, target: str = "/var/run/docker.sock") -> None:
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(64)
        self.target = target
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.dead = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:  # a connection that races kill() must not reach the engine
                if self.dead:
                    client.close()
                    return
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.target)
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def kill(self) -> None:
        with self.lock:
            self.dead = True
            # shutdown wakes a thread blocked in accept(); close alone would leave it accepting
            with contextlib.suppress(OSError):
                self.server.shutdown(socket.SHUT_RDWR)
            self.server.close()
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()


def test_daemon_dying_mid_run_fails_running_items_and_ends_the_session(
    pytester: pytest.Pytester, slow_zoo: Zoo, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_zoo.models([slow_zoo.model("slow")])
    # Build the image through the real socket first: the proxied session then only runs.
    run(pytester, "--madengine-timeout", "1")
    proxy = _Proxy(pytester.path / "d.sock")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/d.sock")
    proc = _start(pytester)
    try:
        _wait_for(lambda: [c["State"] for c in labelled_containers(docker_client)] == ["running"])
        time.sleep(0.5)
        proxy.kill()
        out, _ = proc.communicate(timeout=120)
    finally:
        for container in labelled_containers(docker_client):
            docker_client.api.remove_container(container["Id"], force=True)
    assert "lost the connection to the Docker daemon" in out, out
    assert "1 failed" in out.splitlines()[-1], out
    assert "Traceback" not in out
    rows = read_perf(pytester.path / "perf.csv")
    assert (rows[-1]["status"], rows[-1]["reason"]) == ("FAILURE", "docker connection lost")

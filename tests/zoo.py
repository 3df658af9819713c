"""Test helpers: a tiny model zoo in MAD's layout, and readers for what the plugin writes."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from run_probe import RUN_ID_FILE

BASE_IMAGE = "pytest-madengine/busybox:latest"
# One per suite process: its tests share the default image, while a suite running beside it on the same
# engine builds its own (so neither one's image cleanup removes an image the other still uses).
SUITE_SALT = uuid.uuid4().hex

DOCKERFILE = """# CONTEXT {{'gpu_vendor': '{vendor}', 'guest_os': 'UBUNTU'}}
ARG BASE_DOCKER={base}
FROM $BASE_DOCKER
ARG MAD_SYSTEM_GPU_ARCHITECTURE=unknown
RUN echo "built for $MAD_SYSTEM_GPU_ARCHITECTURE" > /etc/madengine-build
# test suite {salt}
"""

PERF_SCRIPT = """#!/bin/bash
echo "hello from $MAD_MODEL_NAME on $MAD_SYSTEM_GPU_ARCHITECTURE"
echo "performance: 42.5 samples_per_second"
"""


class Zoo:
    """Writes models.json, docker/ and scripts/ under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "docker").mkdir(parents=True, exist_ok=True)
        (root / "scripts").mkdir(parents=True, exist_ok=True)

    def dockerfile(self, name: str = "dummy", vendors: tuple[str, ...] = ("amd",), body: str | None = None) -> None:
        for vendor in vendors:
            if body is None:
                text = DOCKERFILE.format(vendor=vendor.upper(), base=BASE_IMAGE, salt=SUITE_SALT)
            else:  # salted too: a suite beside this one must not share (and then remove) these images
                text = body + ("" if body.endswith("\n") else "\n") + f"# test suite {SUITE_SALT}\n"
            (self.root / "docker" / f"{name}.ubuntu.{vendor}.Dockerfile").write_text(text)

    def script(self, relpath: str, text: str = PERF_SCRIPT) -> None:
        path = self.root / "scripts" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)

    def models(self, entries: list[dict[str, Any]], relpath: str = "models.json") -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries, indent=2))
        return path

    def model(self, name: str, script: str = "", **fields: Any) -> dict[str, Any]:
        script = script or f"scripts/{name}/run.sh"
        entry: dict[str, Any] = {"name": name, "dockerfile": "docker/dummy", "scripts": script, "args": ""}
        entry.update(fields)
        return entry


def read_perf(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


RUN_LABEL = "pytest-madengine.run"


def run_id_of(cwd: Path, timeout: float = 60) -> str:
    """The run id of the session last started in `cwd` (written by run_probe at configure time);
    waits for it, so a test may call it while that session starts."""
    path = cwd / RUN_ID_FILE
    wait_until(lambda: path.exists() and len(path.read_text()) == 12, timeout, f"no run id in {path}")
    return path.read_text()


def forget_run_id(cwd: Path) -> None:
    """Before starting a session in the background in `cwd`: run_id_of must not read an earlier session's id."""
    (cwd / RUN_ID_FILE).unlink(missing_ok=True)


def start_session(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """pytest in the background, in its own process group (so kill_session takes its workers too)."""
    forget_run_id(cwd)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_session(proc: subprocess.Popen[str]) -> None:
    """For a finally: a session a test started does not outlive the test, whatever happened."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
        proc.communicate(timeout=30)


def remove_run(client: docker.DockerClient, run_id: str) -> None:
    """For a finally: whatever containers a run left (a test that fails must not leak)."""
    for container in client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.api.remove_container(container["Id"], force=True)


def labelled_containers(client: docker.DockerClient, run_id: str) -> list[dict[str, Any]]:
    """This run's containers, kept copies aside. Low-level listing (no per-container inspect), so
    containers removed meanwhile don't race; scoped to one run, so other sessions on the engine
    don't matter."""
    found = client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    return [c for c in found if "pytest-madengine.kept" not in (c.get("Labels") or {})]


def wait_until(predicate: Callable[[], object], timeout: float = 90, what: str = "condition") -> None:
    """Poll with a deadline: synchronisation without a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached within {timeout} s")


_Events = TypeVar("_Events", bound="EngineEvents")


class EngineEvents:
    """The engine's own record of labelled containers' lives (`docker events`; other `filters` for other
    events), streamed in a background thread while a session runs. Use as a context manager; `of_run`
    filters one run."""

    def __init__(self, client: docker.DockerClient, filters: dict[str, Any] | None = None) -> None:
        filters = filters if filters is not None else {"type": "container", "label": RUN_LABEL}
        self._stream = client.events(decode=True, filters=filters)
        self.events: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            for event in self._stream:
                self.events.append(event)
        except Exception:  # the stream is closed under us at the end
            return

    def __enter__(self: _Events) -> _Events:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()
        self._thread.join(timeout=10)

    def of_run(self, run_id: str, action: str | None = None) -> list[dict[str, Any]]:
        """Events of one run (optionally one action: create, start, die, destroy), in engine order."""
        return [
            e
            for e in list(self.events)
            if e.get("Actor", {}).get("Attributes", {}).get(RUN_LABEL) == run_id
            and (action is None or e.get("Action") == action)
        ]

    def times(self, run_id: str, action: str) -> dict[str, float]:
        """Engine time (seconds) of `action` per test node id (the container's `pytest-madengine.test` label)."""
        return {
            e["Actor"]["Attributes"]["pytest-madengine.test"]: e["timeNano"] / 1e9 for e in self.of_run(run_id, action)
        }


class LocalRegistry:
    """Debian's docker-registry on 127.0.0.1 with htpasswd auth, for real push and pull."""

    user = "madtester"
    password = "s3cret-Pa55word-xyzzy"

    def __init__(self, root: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        htpasswd = root / "htpasswd"
        subprocess.run(["htpasswd", "-Bbc", str(htpasswd), self.user, self.password], check=True, capture_output=True)
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
            f"auth:\n  htpasswd:\n    realm: madtest\n    path: {htpasswd}\n"
        )
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def run_pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess, quietly and without the cache: how the benchmarks time whole sessions."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def timed_pytest(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """run_pytest, with its wall seconds and the CPU seconds of its processes (pytest, its workers)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = run_pytest(cwd, *args)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def engine_socket() -> str:
    """The local engine's unix socket path (DOCKER_HOST's when it names one)."""
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"


class EngineRelay:
    """A relay from a socket of ours to the engine's unix socket. It notes the first line of each
    chunk sent to the engine (so a test can wait for a request), and `close` pulls the plug: the
    listener and every relayed connection go, and a connection racing it never reaches the engine."""

    def __init__(self, server: socket.socket, target: str = "") -> None:
        self.server = server
        self.target = target or engine_socket()
        self.conns: list[socket.socket] = []
        self.requests: list[bytes] = []
        self.lock = threading.Lock()
        self.dead = False
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def tcp(cls) -> EngineRelay:
        """tcp://127.0.0.1:<port>: a DOCKER_HOST the plugin must treat as remote (another machine's
        filesystem), though the engine behind it is the local one. Its address: `docker_host`."""
        return cls(socket.create_server(("127.0.0.1", 0)))

    @classmethod
    def unix(cls, path: Path, target: str = "") -> EngineRelay:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.listen(64)
        return cls(server, target)

    @property
    def docker_host(self) -> str:
        address = self.server.getsockname()
        return f"tcp://127.0.0.1:{address[1]}" if isinstance(address, tuple) else f"unix://{address}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                if self.dead:
                    client.close()
                    return
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.target)
                self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, outbound: bool) -> None:
        try:
            while data := a.recv(65536):
                if outbound:
                    self.requests.append(data.split(b"\r\n", 1)[0])
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def saw(self, fragment: bytes) -> bool:
        return any(fragment in line for line in list(self.requests))

    def close(self) -> None:
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


def git_image(zoo: Zoo) -> None:
    """docker/withgit: the base image plus this host's git (its binary and shared libraries), for url cards."""
    git = Path(shutil.which("git") or "git").resolve()
    bits = zoo.root / "docker" / "gitbits"
    (bits / "libs").mkdir(parents=True)
    shutil.copy2(git, bits / "git")
    lines = ["FROM pytest-madengine/busybox:latest", "COPY gitbits/git /usr/bin/git"]
    for line in subprocess.run(["ldd", str(git)], capture_output=True, text=True, check=True).stdout.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            shutil.copy2(path, bits / "libs" / Path(path).name)
            lines.append(f"COPY gitbits/libs/{Path(path).name} {path}")
    lines.append("RUN ln -s git /usr/bin/git-upload-pack")
    zoo.dockerfile("withgit", body="\n".join(lines) + "\n")


def bare_repo(where: Path) -> str:
    """where/model.git, a bare repository holding one commit with train.py; its commit id."""
    work = where / "work"
    work.mkdir(parents=True)
    (work / "train.py").write_text("print('from the repo')\n")
    names = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")
    env = {**os.environ, **dict.fromkeys(names, "t")}
    for command in (["init", "-q"], ["add", "train.py"], ["commit", "-qm", "model"]):
        subprocess.run(["git", "-C", str(work), *command], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(where / "model.git")], check=True)
    head = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return head.stdout.strip()

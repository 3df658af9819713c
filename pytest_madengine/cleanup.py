"""No container outlives its run: SIGTERM as Ctrl-C, a final sweep, and reaping earlier runs."""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import docker
import docker.errors

from .container import RUN_LABEL, remove_container
from .gpu_allocator import token_alive
from .runtime import DockerUnavailable, Runtime

Handler = Callable[[int, FrameType | None], Any] | int | None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")


def install_sigterm_as_interrupt() -> Handler:
    """SIGTERM takes Ctrl-C's path: fixtures tear down, containers go, the summary prints."""
    try:
        return signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        return None


def restore_sigterm(previous: Handler) -> None:
    if previous is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)


def remove_run_containers(runtime: Runtime, worker: str | None = None) -> int:
    """Force-remove this run's containers (one worker's, when named); return how many."""
    labels = [f"{RUN_LABEL}={runtime.run_id}"]
    if worker:
        labels.append(f"pytest-madengine.worker={worker}")
    try:
        containers = runtime.client().containers.list(all=True, filters={"label": labels})
    except (DockerUnavailable, docker.errors.DockerException):
        return 0
    for container in containers:
        remove_container(container)
    return len(containers)


def orphans(client: docker.DockerClient, run_id: str) -> list[Any]:
    """Containers of earlier runs on this host whose pytest process is gone."""
    host = socket.gethostname()
    found = []
    for container in client.containers.list(all=True, filters={"label": RUN_LABEL}):
        labels = container.labels or {}
        if labels.get(RUN_LABEL) == run_id or labels.get("pytest-madengine.host", host) != host:
            continue
        pid = labels.get("pytest-madengine.session-pid") or labels.get("pytest-madengine.pid") or ""
        if pid.isdigit() and token_alive(f"{pid}:?"):
            continue
        found.append(container)
    return found


def orphan_report(runtime: Runtime) -> str | None:
    """One line for the header: what earlier runs left behind, removed with --madengine-reap."""
    try:
        client = runtime.client()
        found = orphans(client, runtime.run_id)
    except (DockerUnavailable, docker.errors.DockerException):
        return None
    if not found:
        return None
    if runtime.settings.reap:
        for container in found:
            remove_container(container)
        return f"madengine: removed {len(found)} container(s) left by earlier runs whose pytest is gone"
    return (
        f"madengine: {len(found)} container(s) left by earlier runs whose pytest is gone "
        f"(docker ps -a --filter label={RUN_LABEL}); --madengine-reap removes them"
    )

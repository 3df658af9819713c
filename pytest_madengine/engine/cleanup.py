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
import requests.exceptions

from ..gpus.allocator import token_alive
from .client import DockerUnavailable
from .container import remove_by_id
from .labels import HOST_LABEL, KEPT_LABEL, PID_LABEL, RUN_LABEL, SESSION_PID_LABEL, WORKER_LABEL

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


Connect = Callable[[], docker.DockerClient]


def remove_run_containers(connect: Connect, run_id: str, worker: str | None = None) -> int:
    """Force-remove this run's containers (one worker's, when named); return how many."""
    labels = [f"{RUN_LABEL}={run_id}"]
    if worker:
        labels.append(f"{WORKER_LABEL}={worker}")
    try:
        client = connect()
        ids = [c["Id"] for c in client.api.containers(all=True, filters={"label": labels})]
    except (DockerUnavailable, docker.errors.DockerException, requests.exceptions.RequestException):
        return 0  # the daemon is gone: so are its containers' processes
    for container_id in ids:
        _sweep(client, container_id)
    return len(ids)


def _sweep(client: docker.DockerClient, container_id: str) -> None:
    """A sweep goes on past a container it cannot remove: the others still go."""
    with contextlib.suppress(requests.exceptions.RequestException):
        remove_by_id(client, container_id)


def orphans(client: docker.DockerClient, run_id: str) -> list[str]:
    """Ids of containers of earlier runs on this host whose pytest process is gone."""
    host = socket.gethostname()
    found = []
    for container in client.api.containers(all=True, filters={"label": RUN_LABEL}):
        labels = container.get("Labels") or {}
        if labels.get(RUN_LABEL) in (run_id, "") or KEPT_LABEL in labels:
            continue  # ours, or kept on purpose for inspection
        if labels.get(HOST_LABEL, host) != host:
            continue
        pid = labels.get(SESSION_PID_LABEL) or labels.get(PID_LABEL) or ""
        if pid.isdigit() and token_alive(f"{pid}:?"):
            continue
        found.append(str(container["Id"]))
    return found


def orphan_report(connect: Connect, run_id: str, reap: bool) -> str | None:
    """One line for the header: what earlier runs left behind, removed with --madengine-reap."""
    try:
        client = connect()
        found = orphans(client, run_id)
    except (DockerUnavailable, docker.errors.DockerException, requests.exceptions.RequestException):
        return None
    if not found:
        return None
    if reap:
        for container_id in found:
            _sweep(client, container_id)
        return f"madengine: removed {len(found)} container(s) left by earlier runs whose pytest is gone"
    return (
        f"madengine: {len(found)} container(s) left by earlier runs whose pytest is gone "
        f"(docker ps -a --filter label={RUN_LABEL}); --madengine-reap removes them"
    )

"""Reaching the Docker engine: one connection per process, one clear message when there is none."""

from __future__ import annotations

import os

import docker
import docker.errors

from ..errors import MadengineError


class DockerUnavailable(MadengineError):
    """The engine cannot be reached; one message for the session."""

    perf_reason = "docker unavailable"


def docker_help(exc: BaseException) -> str:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (DOCKER_HOST unset)"
    return (
        f"cannot reach the Docker daemon at {host}: {exc}. "
        "Start it (e.g. `dockerd &` or `systemctl start docker`) or point DOCKER_HOST at a running engine."
    )


class Connection:
    """Connect once; a failure is remembered so every item reports the same one line."""

    def __init__(self) -> None:
        self._client: docker.DockerClient | None = None
        self._error: str | None = None

    def __call__(self) -> docker.DockerClient:
        if self._client is not None:
            return self._client
        if self._error is not None:
            raise DockerUnavailable(self._error)
        try:
            client = docker.from_env(timeout=120)
            client.ping()
        except (docker.errors.DockerException, OSError) as exc:
            self._error = docker_help(exc)
            raise DockerUnavailable(self._error) from None
        self._client = client
        return client

    @property
    def connected(self) -> bool:
        return self._client is not None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

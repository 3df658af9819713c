"""Test helpers: a tiny model zoo in MAD's layout, and readers for what the plugin writes."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker

BASE_IMAGE = "pytest-madengine/busybox:latest"

DOCKERFILE = """# CONTEXT {{'gpu_vendor': '{vendor}', 'guest_os': 'UBUNTU'}}
ARG BASE_DOCKER={base}
FROM $BASE_DOCKER
ARG MAD_SYSTEM_GPU_ARCHITECTURE=unknown
RUN echo "built for $MAD_SYSTEM_GPU_ARCHITECTURE" > /etc/madengine-build
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
            text = body if body is not None else DOCKERFILE.format(vendor=vendor.upper(), base=BASE_IMAGE)
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


def labelled_containers(client: docker.DockerClient) -> list[dict[str, Any]]:
    """Low-level listing (no per-container inspect), so containers removed meanwhile don't race."""
    found = client.api.containers(all=True, filters={"label": "pytest-madengine.run"})
    return [c for c in found if "pytest-madengine.kept" not in (c.get("Labels") or {})]


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

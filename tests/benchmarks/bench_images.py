"""Build once: 20 models sharing 2 Dockerfiles on 2 archs, two sessions, under -n 4.

Counts the builds of each session (from the manifest's build durations: 0 means reused) and
times the second, unchanged session's setup against the first (build-only sessions: all setup).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import docker
from zoo import Zoo, run_pytest

ARGS = ("-n", "4", "--madengine-build-only", "--madengine-arch", "gfx90a,gfx942")


def test_builds_per_session_and_setup_time(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    zoo = Zoo(tmp_path / "zoo")
    salt = uuid.uuid4().hex  # fresh images: the first session really builds
    for name in ("alpha", "beta"):
        zoo.dockerfile(
            name,
            body=f"FROM pytest-madengine/busybox:latest\n# {salt}\nRUN dd if=/dev/urandom of=/blob bs=1M count=8\n",
        )
    zoo.script("m/run.sh")
    zoo.models(
        [
            zoo.model(f"m{i:02d}", script="scripts/m/run.sh", dockerfile=f"docker/{('alpha', 'beta')[i % 2]}")
            for i in range(20)
        ]
    )
    timings, counts = [], []
    for session in ("first", "second"):
        started = time.perf_counter()
        result = run_pytest(zoo.root, *ARGS, "--madengine-manifest-out", f"{session}.json")
        timings.append(time.perf_counter() - started)
        assert result.returncode == 0, result.stdout[-2000:]
        manifest = json.loads((zoo.root / f"{session}.json").read_text())
        assert len(manifest["built_models"]) == 40
        counts.append(sum(1 for e in manifest["built_images"].values() if float(e["build_duration"]) > 0))
    print(
        f"\nimage benchmark: builds {counts[0]} in the first session (target 4), {counts[1]} in the second "
        f"(target 0); setup {timings[0]:.1f} s then {timings[1]:.1f} s, "
        f"second/first = {timings[1] / timings[0]:.2f}"
    )
    assert counts == [4, 0]
    for image in {e["docker_image"] for e in manifest["built_images"].values()}:
        docker_client.images.remove(image, force=True)

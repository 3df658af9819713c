"""Build once: models sharing 2 Dockerfiles on 2 archs, two build-only sessions under -n 4, against
plain `docker build` of the same Dockerfiles (MADENGINE_BENCH=short: 6 models, one arch).

Builds are counted from the engine (each build that ends tags its image; a reused image is not tagged),
never from the plugin's manifest or logs. Printed: the first session's time against plain `docker build`
of every distinct (Dockerfile, arch) one after another without cache (the work the first session must
do), and the second, unchanged session's time (build-only sessions: all setup). Only the counts are
asserted, no timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import docker
import pytest
from test_images import SUITE_LABEL, UniqueBase
from zoo import Zoo, labelled_containers, run_id_of, run_pytest

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
MODELS = 6 if SHORT else 20
ARCHS = ("gfx942",) if SHORT else ("gfx90a", "gfx942")
BLOB_MB = 2 if SHORT else 8
DOCKERFILES = ("alpha", "beta")


def test_builds_per_session_against_plain_docker_build(
    tmp_path: Path, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A base of its own: the first session really builds, and the engine's events are this bench's.
    # Everything built FROM it is removed by the session's image cleanup (tests/conftest.py).
    base = UniqueBase(docker_client, tmp_path_factory.getbasetemp())
    zoo = Zoo(tmp_path / "zoo")
    for name in DOCKERFILES:
        zoo.dockerfile(
            name,
            body=f"FROM {base.ref}\nARG MAD_SYSTEM_GPU_ARCHITECTURE=unknown\n"
            f'RUN echo "{name} $MAD_SYSTEM_GPU_ARCHITECTURE" > /which '
            f"&& dd if=/dev/urandom of=/blob bs=1M count={BLOB_MB}\n",
        )
    zoo.script("m/run.sh")
    zoo.models(
        [
            zoo.model(f"m{i:02d}", script="scripts/m/run.sh", dockerfile=f"docker/{DOCKERFILES[i % 2]}")
            for i in range(MODELS)
        ]
    )
    args = ("-n", "4", "--madengine-build-only", "--madengine-arch", ",".join(ARCHS))
    distinct = len(DOCKERFILES) * len(ARCHS)
    timings: list[float] = []
    counts: list[int] = []
    with base.watch() as engine:
        seen: Counter[str] = Counter()
        for session in ("first", "second"):
            started = time.perf_counter()
            result = run_pytest(zoo.root, *args, "--madengine-manifest-out", f"{session}.json")
            timings.append(time.perf_counter() - started)
            assert result.returncode == 0, result.stdout[-2000:]
            manifest = json.loads((zoo.root / f"{session}.json").read_text())
            assert len(manifest["built_models"]) == MODELS * len(ARCHS)
            assert labelled_containers(docker_client, run_id_of(zoo.root)) == []
            builds = engine.builds()
            counts.append(sum((builds - seen).values()))
            seen = builds

        # Plain `docker build` (the same classic builder as the Docker SDK) of the same contexts.
        steps_before = engine.steps(failed=False)
        started = time.perf_counter()
        for index, (name, arch) in enumerate((n, a) for n in DOCKERFILES for a in ARCHS):
            subprocess.run(
                [
                    "docker",
                    "build",
                    "--no-cache",
                    "-q",
                    "-f",
                    str(zoo.root / "docker" / f"{name}.ubuntu.amd.Dockerfile"),
                    "--build-arg",
                    f"MAD_SYSTEM_GPU_ARCHITECTURE={arch}",
                    "--label",
                    f"{SUITE_LABEL}={tmp_path_factory.getbasetemp()}",
                    "-t",
                    f"pytest-madengine-tests/plain:{base.marker}-{index}",
                    str(zoo.root / "docker"),
                ],
                check=True,
                capture_output=True,
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
            )
        plain = time.perf_counter() - started
        plain_steps = engine.steps(failed=False) - steps_before  # RUN steps executed: one per plain build

    print(
        f"\nimage benchmark ({'short' if SHORT else 'full'}): {MODELS} models x {len(ARCHS)} arch(s), "
        f"{distinct} distinct images; engine builds {counts[0]} in the first session (target {distinct}), "
        f"{counts[1]} in the second (target 0); first session {timings[0]:.1f} s, plain docker build of the "
        f"same images ({plain_steps} built) {plain:.1f} s, first/plain = {timings[0] / plain:.2f}; second session "
        f"{timings[1]:.1f} s, second/first = {timings[1] / timings[0]:.2f}"
    )
    assert counts == [distinct, 0]
    assert plain_steps == distinct

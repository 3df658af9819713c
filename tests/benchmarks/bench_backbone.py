"""Plugin overhead: models sharing one Dockerfile, through pytest vs plain `docker run --rm` (20 models;
MADENGINE_BENCH=short: 5).

Two pairs, like for like: the default isolation against `docker run` with madengine's options, and strict
isolation against Docker's defaults. Printed as ratios (plugin / plain), the median of three rounds that
interleave the two sides, measured in one process on one machine; no timing is asserted, only that every model passed and that no container of the plugin's run
is left once pytest exits.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

import docker
import pytest
from run_probe import RUN_ID_FILE
from zoo import Zoo, labelled_containers, read_perf, run_id_of, run_pytest

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
MODELS = 5 if SHORT else 20
ROUNDS = 1 if SHORT else 3
SCRIPT = '#!/bin/bash\ni=0\nwhile [ $i -lt 200 ]; do i=$((i+1)); done\necho "performance: $i iterations"\n'

ARGS = ("--madengine-arch", "gfx942", "--madengine-gpus", "none")


def test_plugin_against_plain_docker_run(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile()
    names = [f"bench_{i:02d}" for i in range(MODELS)]
    for name in names:
        zoo.script(f"{name}/run.sh", SCRIPT)
    zoo.models([zoo.model(name) for name in names])
    # Warm-up: builds the image once; both sides then use the same image.
    warm = run_pytest(zoo.root, *ARGS, "-k", names[0], "--madengine-perf-csv", str(tmp_path / "warm.csv"))
    assert warm.returncode == 0, warm.stdout
    image = read_perf(tmp_path / "warm.csv")[0]["docker_image"]
    (zoo.root / RUN_ID_FILE).unlink()  # the measured session's id replaces the warm-up's

    # Like for like: madengine's own `docker run` options against the plugin's default isolation, and
    # Docker's defaults against --madengine-isolation strict (whose 8 GB /dev/shm costs nothing here).
    fuse = ["--device", "/dev/fuse"] if Path("/dev/fuse").exists() else []
    pairs = {"madengine": [*MADENGINE_OPTIONS, *fuse], "strict": ["--shm-size", "8g"]}
    ratios: dict[str, list[float]] = {isolation: [] for isolation in pairs}
    per_item: dict[str, list[float]] = {isolation: [] for isolation in pairs}
    floor: dict[str, list[float]] = {isolation: [] for isolation in pairs}  # as if the plugin's start-up cost nothing
    for _ in range(ROUNDS):  # rounds interleave the two sides, so a noisy moment hits both
        for isolation, options in pairs.items():
            plain = plain_runs(zoo, names, image, options)
            plugin = plugin_run(zoo, tmp_path, isolation, docker_client)
            startup = empty_session(zoo, *ARGS)
            bare = empty_session(zoo, "-p", "no:madengine")
            ratios[isolation].append(plugin / plain)
            per_item[isolation].append((plugin - startup) / plain)
            floor[isolation].append((plugin - startup + bare) / plain)
            print(
                f"\nbackbone round, {isolation}: {MODELS} models, plain docker run {plain:.2f} s, "
                f"plugin {plugin:.2f} s (of which a session running nothing: {startup:.2f} s; pytest's own, "
                f"without the plugin: {bare:.2f} s), ratio {plugin / plain:.2f}"
            )
    for isolation, measured in ratios.items():
        print(
            f"\nbackbone benchmark{' (short)' if SHORT else ''}, {isolation}: {MODELS} models, ratio plugin/plain = "
            f"{statistics.median(measured):.2f} (median of {len(measured)} rounds: "
            f"{', '.join(f'{r:.2f}' for r in measured)}; target <= 1.10); per item, the session's start-up left "
            f"out: {statistics.median(per_item[isolation]):.2f}; with a plugin whose start-up cost nothing (pytest's "
            f"own start-up kept): {statistics.median(floor[isolation]):.2f}; every round left no container of its "
            "run (asserted)"
        )


def empty_session(zoo: Zoo, *args: str) -> float:
    """Seconds for a session that selects no model: pytest's and the plugin's start-up, paid once per
    session (with `-p no:madengine`, pytest's own)."""
    started = time.perf_counter()
    result = run_pytest(zoo.root, *args, "-k", "no_model_has_this_name")
    seconds = time.perf_counter() - started
    assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout
    return seconds


def plugin_run(zoo: Zoo, tmp_path: Path, isolation: str, docker_client: docker.DockerClient) -> float:
    """Seconds for one pytest session over the whole zoo; every model passed and nothing of its run is left."""
    started = time.perf_counter()
    result = run_pytest(
        zoo.root, *ARGS, "--madengine-isolation", isolation, "--madengine-perf-csv", str(tmp_path / f"{isolation}.csv")
    )
    seconds = time.perf_counter() - started
    left = len(labelled_containers(docker_client, run_id_of(zoo.root)))
    (zoo.root / RUN_ID_FILE).unlink()
    assert result.returncode == 0, result.stdout
    rows = read_perf(tmp_path / f"{isolation}.csv")
    assert [r["status"] for r in rows][-MODELS:] == ["SUCCESS"] * MODELS
    assert left == 0
    return seconds


MADENGINE_OPTIONS = [
    *("--network", "host", "--ipc", "host", "-u", "root", "--group-add", "video"),
    *("--cap-add", "SYS_PTRACE", "--cap-add", "SYS_ADMIN"),
    *("--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"),
]


def plain_runs(zoo: Zoo, names: list[str], image: str, options: list[str]) -> float:
    """Seconds for `docker run --rm` of every model, one after another, with `options`."""
    started = time.perf_counter()
    for name in names:
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                *options,
                "-v",
                f"{zoo.root / 'scripts' / name}:/w",
                "-w",
                "/w",
                image,
                "bash",
                "run.sh",
            ],
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - started

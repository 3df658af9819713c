"""Per-item cost against the size of the zoo: the same models beside a 200 MB and a 1 MB sibling sub-zoo
(10 models; MADENGINE_BENCH=short: 50 MB against 1 MB, 5 models).

With a local engine the shared scripts/ is mounted, not copied, so the big tree should add next to
nothing per item. Printed as per-item seconds and their ratio (big / small), each the best of two
interleaved sessions, measured in one process; no timing is asserted, only that every model passed and
that no container of a run is left.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import docker
from run_probe import RUN_ID_FILE
from zoo import Zoo, labelled_containers, read_perf, run_id_of, run_pytest

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
MODELS = 5 if SHORT else 10
BIG_MB = 50 if SHORT else 200
SMALL_MB = 1
CHUNK_MB = 10
ROUNDS = 2
SCRIPT = '#!/bin/bash\nls ../scripts > /dev/null\necho "performance: 1 items"\n'
ARGS = ("--madengine-arch", "gfx942", "--madengine-gpus", "none")


def make_zoo(root: Path, megabytes: int) -> Zoo:
    """MODELS models, each its own folder, and `megabytes` of random bytes in a sibling sub-zoo."""
    zoo = Zoo(root)
    zoo.dockerfile()
    names = [f"item_{i:02d}" for i in range(MODELS)]
    for name in names:
        zoo.script(f"{name}/run.sh", SCRIPT)
    zoo.models([zoo.model(name) for name in names])
    bulk = root / "scripts" / "other_zoo" / "weights"
    bulk.mkdir(parents=True)
    left, index = megabytes, 0
    while left > 0:
        size = min(left, CHUNK_MB)
        (bulk / f"part{index:03d}.bin").write_bytes(os.urandom(size * 1024 * 1024))
        left, index = left - size, index + 1
    return zoo


def session(zoo: Zoo, csv: Path, docker_client: docker.DockerClient) -> float:
    """One timed pytest session over every model of `zoo`; checks all passed and nothing was left."""
    (zoo.root / RUN_ID_FILE).unlink(missing_ok=True)
    csv.unlink(missing_ok=True)
    started = time.perf_counter()
    result = run_pytest(zoo.root, *ARGS, "--madengine-perf-csv", str(csv))
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stdout
    assert [r["status"] for r in read_perf(csv)] == ["SUCCESS"] * MODELS
    assert labelled_containers(docker_client, run_id_of(zoo.root)) == []
    return wall


def test_per_item_cost_does_not_grow_with_the_zoo(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    small = make_zoo(tmp_path / "small", SMALL_MB)
    big = make_zoo(tmp_path / "big", BIG_MB)
    # Warm-up: builds the image once (both zoos have the same docker/ context, so they share it).
    warm = run_pytest(small.root, *ARGS, "-k", "item_00", "--madengine-perf-csv", str(tmp_path / "warm.csv"))
    assert warm.returncode == 0, warm.stdout

    walls: dict[str, list[float]] = {"small": [], "big": []}
    for _ in range(ROUNDS):
        walls["small"].append(session(small, tmp_path / "small.csv", docker_client))
        walls["big"].append(session(big, tmp_path / "big.csv", docker_client))
    per_small = min(walls["small"]) / MODELS
    per_big = min(walls["big"]) / MODELS
    ratio = per_big / per_small
    print(
        f"\nworkspace benchmark{' (short)' if SHORT else ''}: {MODELS} models per session, best of {ROUNDS}; "
        f"{SMALL_MB} MB scripts/ {per_small:.3f} s per item, {BIG_MB} MB scripts/ {per_big:.3f} s per item; "
        f"ratio big/small = {ratio:.2f} (target < 1.10: the big tree adds {per_big - per_small:+.3f} s, "
        f"{100 * (ratio - 1):+.1f}% per item); sessions (s): "
        + ", ".join(f"{name} {' '.join(f'{w:.2f}' for w in times)}" for name, times in walls.items())
    )

"""GPU leasing: sleep models of several sizes sharing a pool under xdist (40 models of 1, 2, 4 and 8
GPUs on a pool of 8 under -n 8; MADENGINE_BENCH=short: 12 models of 1, 2 and 4 GPUs sleeping 2 s on
a pool of 4 under -n 4).

Judged from the engine: each container's life is its `start` and `die` events, and its GPUs are the
ids its own script printed (`$MAD_HOST_GPU_IDS`). Overlaps = pairs of containers that shared a GPU
while both were alive (asserted: zero), as are this run's containers left once pytest exits.
Efficiency = lower bound of the makespan (max of GPU-seconds / pool and the longest model) divided by
the measured wall time of the pytest run; printed, never asserted.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import docker
from run_probe import RUN_ID_FILE
from zoo import EngineEvents, Zoo, labelled_containers, read_perf, run_id_of, run_pytest, wait_until

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
POOL = 4 if SHORT else 8
# (n_gpus, seconds, how many), interleaved in models.json as a real zoo would be.
MIX = [(4, 2.0, 2), (2, 2.0, 4), (1, 2.0, 6)] if SHORT else [(8, 6.0, 4), (4, 6.0, 8), (2, 6.0, 12), (1, 8.0, 16)]

ARGS = ("--madengine-arch", "gfx942", f"--madengine-gpus=0-{POOL - 1}")
SCRIPT = '#!/bin/bash\necho "gpus-of $MAD_MODEL_NAME: $MAD_HOST_GPU_IDS"\nsleep "$1"\necho "performance: $MAD_RUNTIME_NGPUS gpus"\n'
GPU_LINE = re.compile(r"gpus-of (\S+): ([\d,]+)")


def test_lease_efficiency_and_overlaps(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile()
    zoo.script("sleep/run.sh", SCRIPT)
    pending = [[(n, s)] * count for n, s, count in MIX]
    models: list[tuple[str, int, float]] = []
    while any(pending):
        for group in pending:
            if group:
                n, seconds = group.pop()
                models.append((f"sleep_{len(models):02d}_g{n}", n, seconds))
    zoo.models([zoo.model(name, script="scripts/sleep/run.sh", n_gpus=str(n), args=str(s)) for name, n, s in models])
    warm = run_pytest(zoo.root, *ARGS, "-k", models[0][0], "--madengine-perf-csv", str(tmp_path / "warm.csv"))
    assert warm.returncode == 0, warm.stdout
    (zoo.root / RUN_ID_FILE).unlink()  # the measured session's id replaces the warm-up's

    with EngineEvents(docker_client) as events:
        started = time.perf_counter()
        result = run_pytest(zoo.root, *ARGS, "-n", str(POOL), "-rA", "--madengine-perf-csv", str(tmp_path / "perf.csv"))
        wall = time.perf_counter() - started
        run_id = run_id_of(zoo.root)
        left = len(labelled_containers(docker_client, run_id))
        assert result.returncode == 0, result.stdout[-3000:]
        wait_until(lambda: len(events.of_run(run_id, "die")) >= len(models), 60, "a die event for every container")
        starts, dies = events.times(run_id, "start"), events.times(run_id, "die")
    assert len(read_perf(tmp_path / "perf.csv")) == len(models)

    def name_of(nodeid: str) -> str:
        return nodeid.split("::")[1].split("[")[0]

    lives = {name_of(nodeid): (starts[nodeid], dies[nodeid]) for nodeid in starts}
    gpus = {name: set(map(int, ids.split(","))) for name, ids in GPU_LINE.findall(result.stdout)}
    assert {name: len(ids) for name, ids in gpus.items()} == {name: n for name, n, _ in models}
    assert lives.keys() == gpus.keys()
    names = sorted(lives)
    overlaps = [
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if gpus[a] & gpus[b] and lives[a][0] < lives[b][1] and lives[b][0] < lives[a][1]
    ]
    gpu_seconds = sum(n * s for _, n, s in models)
    lower_bound = max(gpu_seconds / POOL, max(s for _, _, s in models))
    span = max(die for _, die in lives.values()) - min(start for start, _ in lives.values())
    busy = sum(len(gpus[name]) * (die - start) for name, (start, die) in lives.items())
    nominal = {name: s for name, _, s in models}
    overhead = sum(die - start - nominal[name] for name, (start, die) in lives.items()) / len(lives)
    print(
        f"\nGPU leasing benchmark{' (short)' if SHORT else ''}: {len(models)} models, {gpu_seconds:.0f} GPU-s "
        f"on {POOL} GPUs under -n {POOL}, lower bound {lower_bound:.1f} s, wall {wall:.1f} s "
        f"(containers span {span:.1f} s), efficiency {lower_bound / wall:.2f} (target >= 0.85), "
        f"GPUs busy with a live container {busy / (POOL * span):.0%} of the span, "
        f"overlaps {len(overlaps)} (target 0), containers left {left} (target 0); "
        f"each container lived {overhead:.2f} s longer than its model's sleep on average"
    )
    assert overlaps == [], overlaps
    assert left == 0

"""GPU leasing: 40 sleep models of 1, 2, 4 and 8 GPUs on an 8-GPU pool under -n 8.

Efficiency = lower bound of the makespan (max of GPU-seconds / 8 and the longest model) divided by
the measured wall time of the pytest run. Also checks every lease interval for overlaps.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import docker
from zoo import Zoo, read_perf, run_pytest

POOL = 8
# (n_gpus, seconds, how many), interleaved in models.json as a real zoo would be.
MIX = [(8, 6.0, 4), (4, 6.0, 8), (2, 6.0, 12), (1, 8.0, 16)]

ARGS = ("--madengine-arch", "gfx942", f"--madengine-gpus=0-{POOL - 1}")


def test_lease_efficiency_and_overlaps(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile()
    zoo.script("sleep/run.sh", '#!/bin/bash\nsleep "$1"\necho "performance: $MAD_RUNTIME_NGPUS gpus"\n')
    pending = [[(n, s)] * count for n, s, count in MIX]
    models = []
    while any(pending):
        for group in pending:
            if group:
                n, seconds = group.pop()
                models.append((f"sleep_{len(models):02d}_g{n}", n, seconds))
    zoo.models([zoo.model(name, script="scripts/sleep/run.sh", n_gpus=str(n), args=str(s)) for name, n, s in models])
    warm = run_pytest(zoo.root, *ARGS, "-k", models[0][0], "--madengine-perf-csv", str(tmp_path / "warm.csv"))
    assert warm.returncode == 0, warm.stdout

    log = Path(os.environ.get("BENCH_LEASE_LOG", tmp_path / "leases.jsonl"))
    started = time.perf_counter()
    result = run_pytest(
        zoo.root,
        *ARGS,
        "-n",
        str(POOL),
        "--madengine-perf-csv",
        str(tmp_path / "perf.csv"),
        "--madengine-lease-log",
        str(log),
    )
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-3000:]
    assert len(read_perf(tmp_path / "perf.csv")) == len(models)

    events = [json.loads(line) for line in log.read_text().splitlines()]
    acquired = {e["ticket"]: e for e in events if e["event"] == "acquire"}
    released = {e["ticket"]: e for e in events if e["event"] == "release"}
    intervals = [(set(acquired[t]["ids"]), acquired[t]["t"], released[t]["t"]) for t in acquired]
    overlaps = sum(
        1 for i, a in enumerate(intervals) for b in intervals[i + 1 :] if a[0] & b[0] and a[1] < b[2] and b[1] < a[2]
    )
    nominal = {name: s for name, _, s in models}
    holds = [
        released[t]["t"] - acquired[t]["t"] - nominal[acquired[t]["holder"].split("::")[1].split("[")[0]]
        for t in acquired
    ]
    gpu_seconds = sum(n * s for _, n, s in models)
    lower_bound = max(gpu_seconds / POOL, max(s for _, _, s in models))
    span = max(r for _, _, r in intervals) - min(a for _, a, _ in intervals)
    print(
        f"\nGPU leasing benchmark: {len(models)} models, {gpu_seconds:.0f} GPU-s on {POOL} GPUs, "
        f"lower bound {lower_bound:.1f} s, wall {wall:.1f} s (leases span {span:.1f} s), "
        f"efficiency {lower_bound / wall:.2f} (target >= 0.85), overlaps {overlaps} (target 0); "
        f"each lease outlived its model's sleep by {sum(holds) / len(holds):.2f} s on average"
    )
    assert overlaps == 0

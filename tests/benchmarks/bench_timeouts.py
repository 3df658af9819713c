"""Kill latency: models that sleep past a 2 s limit, under xdist (20 under -n 4; MADENGINE_BENCH=short:
6 under -n 2).

Latency = the container's `die` event minus (its `start` event + the limit), from the engine's own
event stream. Also counts this run's containers left behind once pytest exits (asserted: zero); no
timing is asserted.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import docker
from run_probe import RUN_ID_FILE
from zoo import EngineEvents, Zoo, labelled_containers, read_perf, run_id_of, run_pytest, wait_until

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
LIMIT = 2
MODELS = 6 if SHORT else 20
WORKERS = 2 if SHORT else 4

ARGS = ("--madengine-arch", "gfx942", "--madengine-gpus", "none")


def test_kill_latency_after_the_deadline(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile()
    zoo.script("sleepy/run.sh", "#!/bin/bash\nsleep 60\n")
    zoo.models([zoo.model(f"sleepy_{i:02d}", script="scripts/sleepy/run.sh", timeout=LIMIT) for i in range(MODELS)])
    warm = run_pytest(zoo.root, *ARGS, "-k", "sleepy_00", "--madengine-perf-csv", str(tmp_path / "warm.csv"))
    assert f"timed out after {LIMIT} s" in warm.stdout, warm.stdout[-2000:]
    (zoo.root / RUN_ID_FILE).unlink()  # the measured session's id replaces the warm-up's

    with EngineEvents(docker_client) as engine:
        result = run_pytest(zoo.root, *ARGS, "-n", str(WORKERS), "--madengine-perf-csv", str(tmp_path / "perf.csv"))
        run_id = run_id_of(zoo.root)
        # The stream trails the engine a little: wait for every container's end before reading it.
        wait_until(
            lambda: len(engine.of_run(run_id, "destroy")) >= MODELS, 60, "the engine reports every container gone"
        )
        left = len(labelled_containers(docker_client, run_id))
    rows = read_perf(tmp_path / "perf.csv")
    assert [r["reason"] for r in rows] == ["timeout"] * MODELS, result.stdout[-2000:]

    starts, dies = engine.times(run_id, "start"), engine.times(run_id, "die")
    assert len(starts) == MODELS and starts.keys() == dies.keys(), (starts, dies)
    latencies = sorted(dies[test] - starts[test] - LIMIT for test in starts)
    print(
        f"\ntimeout benchmark{' (short)' if SHORT else ''}: {MODELS} models past a {LIMIT} s limit under "
        f"-n {WORKERS}: kill latency after the deadline median {statistics.median(latencies):.2f} s, worst "
        f"{latencies[-1]:.2f} s (target <= 2 s); containers of the run left behind: {left} (target 0)"
    )
    assert left == 0

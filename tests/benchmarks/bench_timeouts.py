"""Kill latency: 20 models that sleep past a 2 s limit, under -n 4.

Latency = the container's `die` event minus (its `start` event + the limit), from the engine's own
event stream. Also counts containers left behind once pytest exits.
"""

from __future__ import annotations

import statistics
import threading
from pathlib import Path
from typing import Any

import docker
from zoo import Zoo, labelled_containers, read_perf, run_pytest

LIMIT = 2
MODELS = 20

ARGS = ("--madengine-arch", "gfx942", "--madengine-gpus", "none")


def test_kill_latency_after_the_deadline(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile()
    zoo.script("sleepy/run.sh", "#!/bin/bash\nsleep 60\n")
    zoo.models([zoo.model(f"sleepy_{i:02d}", script="scripts/sleepy/run.sh", timeout=LIMIT) for i in range(MODELS)])
    warm = run_pytest(zoo.root, *ARGS, "-k", "sleepy_00", "--madengine-perf-csv", str(tmp_path / "warm.csv"))
    assert "timed out after 2 s" in warm.stdout

    events: list[dict[str, Any]] = []
    stream = docker_client.events(decode=True, filters={"label": "pytest-madengine.run", "type": "container"})
    reader = threading.Thread(target=lambda: events.extend(e for e in stream), daemon=True)
    reader.start()
    result = run_pytest(zoo.root, *ARGS, "-n", "4", "--madengine-perf-csv", str(tmp_path / "perf.csv"))
    left = len(labelled_containers(docker_client))
    stream.close()
    reader.join(timeout=10)
    rows = read_perf(tmp_path / "perf.csv")
    assert [r["reason"] for r in rows] == ["timeout"] * MODELS, result.stdout[-2000:]

    starts = {e["id"]: e["timeNano"] for e in events if e.get("status") == "start"}
    dies = {e["id"]: e["timeNano"] for e in events if e.get("status") == "die"}
    latencies = sorted((dies[i] - starts[i]) / 1e9 - LIMIT for i in starts if i in dies)
    assert len(latencies) == MODELS
    print(
        f"\ntimeout benchmark: {MODELS} models past a {LIMIT} s limit under -n 4: kill latency after the "
        f"deadline median {statistics.median(latencies):.2f} s, worst {latencies[-1]:.2f} s (target <= 2 s); "
        f"containers left behind: {left} (target 0)"
    )
    assert left == 0

"""SLURM mode's per-model overhead over local mode on the same host: 20 trivial models (MADENGINE_BENCH=short:
5), each session timed whole, local and SLURM interleaved over three rounds in this process. Printed as
the median ratio; only correctness is asserted (every model passed in both modes, each SLURM row names its node)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

import docker
from zoo import Zoo, read_perf, run_pytest

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
MODELS = 5 if SHORT else 20
ROUNDS = 1 if SHORT else 3
ARGS = ("--madengine-arch", "gfx942", "-p", "no:cacheprovider")


def test_slurm_against_local(tmp_path: Path, slurm_cluster: dict[str, str], docker_client: docker.DockerClient) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile()
    zoo.script("m/run.sh")
    zoo.models([zoo.model(f"m{i:02d}", script="scripts/m/run.sh", n_gpus=1) for i in range(MODELS)])
    warm = run_pytest(
        zoo.root, *ARGS, "--madengine-gpus", "0-7", "-k", "m00", "--madengine-perf-csv", str(tmp_path / "w.csv")
    )
    assert warm.returncode == 0, warm.stdout
    image = read_perf(tmp_path / "w.csv")[0]["docker_image"]
    os.environ.update(slurm_cluster)
    ratios, floors = [], []
    try:
        for _ in range(ROUNDS):  # interleaved, so a noisy moment hits both modes
            local_s = timed(zoo, tmp_path, "local", "--madengine-gpus", "0-7")
            slurm_s = timed(zoo, tmp_path, "slurm", "--madengine-slurm")
            srun_s, cli_s, sdk_s = floor_per_job(image, docker_client)
            ratios.append(slurm_s / local_s)
            floors.append((local_s + MODELS * (srun_s + cli_s - sdk_s)) / local_s)
            print(
                f"\nSLURM round: {MODELS} models, local {local_s:.2f} s, SLURM {slurm_s:.2f} s, ratio {slurm_s / local_s:.2f}; "
                f"per job: srun /bin/true {srun_s * 1000:.0f} ms, docker run --rm through the CLI {cli_s * 1000:.0f} ms "
                f"against {sdk_s * 1000:.0f} ms through the SDK"
            )
    finally:
        for name in slurm_cluster:
            os.environ.pop(name, None)
    rows = read_perf(tmp_path / "slurm.csv")
    assert len(rows) == MODELS * ROUNDS and {r["machine_name"] for r in rows} <= {"n1", "n2"}
    print(
        f"\nSLURM benchmark{' (short)' if SHORT else ''}: {MODELS} models, ratio SLURM/local = "
        f"{statistics.median(ratios):.2f} (median of {len(ratios)} rounds: {', '.join(f'{r:.2f}' for r in ratios)}; "
        "target <= 1.25); the floor, SLURM mode if its runner cost nothing beyond srun and docker's CLI: "
        f"{statistics.median(floors):.2f}"
    )


def floor_per_job(image: str, client: docker.DockerClient, jobs: int = 10) -> tuple[float, float, float]:
    """Seconds per job that SLURM mode cannot avoid: `srun` of nothing, and a container through the
    docker CLI on the node (where local mode uses the SDK), each the mean of `jobs`, interleaved."""
    srun = cli = sdk = 0.0
    for _ in range(jobs):
        started = time.perf_counter()
        subprocess.run(["srun", "--export=NONE", "--gres=gpu:1", "/bin/true"], check=True, capture_output=True)
        srun += time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(
            ["docker", "run", "--rm", "--pull", "never", "--network", "host", image, "true"],
            check=True,
            capture_output=True,
        )
        cli += time.perf_counter() - started
        started = time.perf_counter()
        client.containers.run(image, ["true"], remove=True, network_mode="host")
        sdk += time.perf_counter() - started
    return srun / jobs, cli / jobs, sdk / jobs


def timed(zoo: Zoo, tmp_path: Path, mode: str, *args: str) -> float:
    """Seconds for one whole session in `mode`; every model passed."""
    started = time.perf_counter()
    result = run_pytest(zoo.root, *ARGS, *args, "--madengine-perf-csv", str(tmp_path / f"{mode}.csv"))
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout
    return seconds

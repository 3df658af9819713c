"""SLURM mode's per-model overhead over local mode on the same host: 20 trivial models (MADENGINE_BENCH=short:
5), each session timed whole, one after the other in this process. Printed as a ratio; only correctness
is asserted (every model passed in both modes, each SLURM row names its node)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from zoo import Zoo, read_perf, run_pytest

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
MODELS = 5 if SHORT else 20
ARGS = ("--madengine-arch", "gfx942", "-p", "no:cacheprovider")


def test_slurm_against_local(tmp_path: Path, slurm_cluster: dict[str, str]) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile()
    zoo.script("m/run.sh")
    zoo.models([zoo.model(f"m{i:02d}", script="scripts/m/run.sh", n_gpus=1) for i in range(MODELS)])
    warm = run_pytest(
        zoo.root, *ARGS, "--madengine-gpus", "0-7", "-k", "m00", "--madengine-perf-csv", str(tmp_path / "w.csv")
    )
    assert warm.returncode == 0, warm.stdout
    os.environ.update(slurm_cluster)
    try:
        started = time.perf_counter()
        local = run_pytest(
            zoo.root, *ARGS, "--madengine-gpus", "0-7", "--madengine-perf-csv", str(tmp_path / "local.csv")
        )
        local_s = time.perf_counter() - started
        started = time.perf_counter()
        slurm = run_pytest(zoo.root, *ARGS, "--madengine-slurm", "--madengine-perf-csv", str(tmp_path / "slurm.csv"))
        slurm_s = time.perf_counter() - started
    finally:
        for name in slurm_cluster:
            os.environ.pop(name, None)
    assert local.returncode == 0, local.stdout
    assert slurm.returncode == 0, slurm.stdout
    rows = read_perf(tmp_path / "slurm.csv")
    assert len(rows) == MODELS and {r["machine_name"] for r in rows} <= {"n1", "n2"}
    print(
        f"\nSLURM benchmark{' (short)' if SHORT else ''}: {MODELS} models, local {local_s:.2f} s, SLURM {slurm_s:.2f} s, "
        f"ratio SLURM/local = {slurm_s / local_s:.2f} (target <= 1.25)"
    )

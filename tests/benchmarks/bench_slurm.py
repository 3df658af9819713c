"""SLURM mode's per-model overhead over local mode on the same host: 20 trivial models (MADENGINE_BENCH=short:
5), each session timed whole, local and SLURM interleaved over three rounds in this process. Printed as
the median ratio; only correctness is asserted (every model passed in both modes, each SLURM row names its node)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from zoo import Zoo, read_perf, run_pytest

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
MODELS = 5 if SHORT else 20
ROUNDS = 1 if SHORT else 3
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
    ratios = []
    try:
        for _ in range(ROUNDS):  # interleaved, so a noisy moment hits both modes
            local_s = timed(zoo, tmp_path, "local", "--madengine-gpus", "0-7")
            slurm_s = timed(zoo, tmp_path, "slurm", "--madengine-slurm")
            ratios.append(slurm_s / local_s)
            print(
                f"\nSLURM round: {MODELS} models, local {local_s:.2f} s, SLURM {slurm_s:.2f} s, ratio {slurm_s / local_s:.2f}"
            )
    finally:
        for name in slurm_cluster:
            os.environ.pop(name, None)
    rows = read_perf(tmp_path / "slurm.csv")
    assert len(rows) == MODELS * ROUNDS and {r["machine_name"] for r in rows} <= {"n1", "n2"}
    print(
        f"\nSLURM benchmark{' (short)' if SHORT else ''}: {MODELS} models, ratio SLURM/local = "
        f"{statistics.median(ratios):.2f} (median of {len(ratios)} rounds: {', '.join(f'{r:.2f}' for r in ratios)}; "
        "target <= 1.25)"
    )


def timed(zoo: Zoo, tmp_path: Path, mode: str, *args: str) -> float:
    """Seconds for one whole session in `mode`; every model passed."""
    started = time.perf_counter()
    result = run_pytest(zoo.root, *ARGS, *args, "--madengine-perf-csv", str(tmp_path / f"{mode}.csv"))
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout
    return seconds

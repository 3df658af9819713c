"""What storing results costs: one session of trivial models with --madengine-autosave (SQLite)
against the same session without, interleaved over two rounds in this process, the second round in
the other order (a machine that drifts slower then weighs on both sides alike). A whole warm-up
session, unmeasured, comes first: it creates the history's schema, and each measured session then
follows one of the same size, once the engine is idle again. 1,000 models; MADENGINE_BENCH=short:
50 models, one round. Printed as the median ratio of wall time, and of the CPU time of the sessions'
own processes (steadier on a noisy host); only correctness is asserted (every result is in the
history)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from zoo import Zoo, run_pytest, timed_pytest

from pytest_madengine.history.store import Store

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
MODELS = 50 if SHORT else 1000
ROUNDS = 1 if SHORT else 2
ARGS = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "-n", "2")


def test_storing_results_against_not_storing(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile()
    zoo.script("m/run.sh")
    zoo.models([zoo.model(f"m{i:04d}", script="scripts/m/run.sh") for i in range(MODELS)])
    url = f"sqlite:///{tmp_path / 'history.db'}"
    # A whole unmeasured session first: the image built, the history's schema created (Alembic, once
    # per database), and every measured session then follows one of the same size (a session runs
    # measurably slower after another: the engine is still clearing the last one's containers).
    storage = ("--madengine-storage", url, "--madengine-autosave")
    warm = run_pytest(zoo.root, *ARGS, *storage, "--madengine-perf-csv", str(tmp_path / "warm.csv"))
    assert warm.returncode == 0, warm.stdout
    sides = {
        "plain": (*ARGS, "--madengine-perf-csv", str(tmp_path / "plain.csv")),
        "stored": (*ARGS, *storage, "--madengine-perf-csv", str(tmp_path / "s.csv")),
    }
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    for index in range(ROUNDS):  # interleaved, so a slow moment of the machine hits both sides
        order = ("stored", "plain") if index % 2 else ("plain", "stored")
        measured = {side: timed(zoo.root, *sides[side]) for side in order}
        (plain_s, plain_cpu), (stored_s, stored_cpu) = measured["plain"], measured["stored"]
        ratios.append(stored_s / plain_s)
        cpu_ratios.append(stored_cpu / plain_cpu)
        print(
            f"\nhistory round {index + 1}: without storage {plain_s:.2f} s (CPU {plain_cpu:.2f} s), "
            f"with autosave {stored_s:.2f} s (CPU {stored_cpu:.2f} s)"
        )
    store = Store(url)
    runs = store.runs()
    sizes = sorted(len((store.run(r.run_id) or (r, []))[1]) for r in runs)
    assert sizes == [MODELS] * (ROUNDS + 1), sizes  # the warm-up's results, then every stored session's
    print(
        f"\nhistory benchmark{' (short)' if SHORT else ''}: {MODELS} models, ratio with/without autosave "
        f"{statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)}; target < 1.05); "
        f"CPU time of the sessions' processes {statistics.median(cpu_ratios):.3f}"
    )


def engine_ticks() -> int:
    """CPU ticks the Docker engine's daemons (dockerd, containerd) have used so far."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.index("(") + 1 : text.rindex(")")] in ("dockerd", "containerd"):
            fields = text[text.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def settle_engine(limit_s: float = 120) -> None:
    """Wait until the engine is idle (under 2 ticks in half a second): it clears a session's removed
    containers after the session ends, and that work would slow whichever session comes next."""
    deadline = time.monotonic() + limit_s
    last = engine_ticks()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = engine_ticks()
        if now - last < 2:
            return
        last = now


def timed(root: Path, *args: str) -> tuple[float, float]:
    """Wall seconds of one session, and the CPU seconds of its processes (pytest and its workers)."""
    settle_engine()
    result, wall, cpu = timed_pytest(root, *args)
    assert result.returncode == 0, result.stdout[-3000:]
    return wall, cpu

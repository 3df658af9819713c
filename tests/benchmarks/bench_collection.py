"""Collection speed: 10,000 models of one models.json on 2 archs (20,000 items) collected with
`--collect-only -q`, against pytest's own collection of 20,000 parametrized trivial tests
(MADENGINE_BENCH=short: 1,000 models, 2,000 tests).

Both sides are the same pytest command line in a subprocess, timed in alternation, best of 3 each;
printed as a ratio (models / parametrized) of wall time, and of the subprocess's CPU time (user +
system), which a loaded machine disturbs less. Only correctness is asserted: each side collected
exactly the expected number of items.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from zoo import Zoo, timed_pytest

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
MODELS = 1_000 if SHORT else 10_000
ARCHS = ("gfx90a", "gfx942")
ITEMS = MODELS * len(ARCHS)
REPEATS = 3
ARGS = ("--collect-only", "--madengine-arch", ",".join(ARCHS), "--madengine-gpus", "none")

PARAMETRIZED = f"""import pytest


@pytest.mark.parametrize("i", range({ITEMS}))
def test_trivial(i):
    pass
"""


def collected(result: subprocess.CompletedProcess[str]) -> int:
    """The count from pytest's `N tests collected` line; -1 when absent."""
    match = re.search(r"^(\d+) tests? collected", result.stdout, flags=re.MULTILINE)
    return int(match.group(1)) if match else -1


def timed(cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the subprocess) of one run, checked for its item count."""
    result, elapsed, cpu = timed_pytest(cwd, *ARGS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert collected(result) == ITEMS, result.stdout[-3000:]
    return elapsed, cpu


def test_models_collection_against_parametrized(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile(vendors=("amd",))
    zoo.script("run.sh")  # every model shares one script, as many MAD models share a scripts directory
    zoo.models([zoo.model(f"model_{i:05d}", script="scripts/run.sh", tags=["pyt", "perf"]) for i in range(MODELS)])
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "test_parametrized.py").write_text(PARAMETRIZED)

    models_times: list[tuple[float, float]] = []
    plain_times: list[tuple[float, float]] = []
    for _ in range(REPEATS):  # alternated, so drifting load hits both sides alike
        models_times.append(timed(zoo.root))
        plain_times.append(timed(plain))

    models_wall, plain_wall = min(t[0] for t in models_times), min(t[0] for t in plain_times)
    models_cpu, plain_cpu = min(t[1] for t in models_times), min(t[1] for t in plain_times)
    print(
        f"\ncollection benchmark{' (short)' if SHORT else ''}: {MODELS} models x {len(ARCHS)} archs = {ITEMS} items "
        f"in {models_wall:.2f} s, {ITEMS} parametrized tests in {plain_wall:.2f} s (best of {REPEATS}), "
        f"ratio models/parametrized = {models_wall / plain_wall:.2f} (target <= 1.5); "
        f"CPU {models_cpu:.2f} s / {plain_cpu:.2f} s = {models_cpu / plain_cpu:.2f}"
    )

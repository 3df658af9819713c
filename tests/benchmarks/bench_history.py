"""What storing results costs: one session of trivial models with --madengine-autosave (SQLite)
against the same session without, interleaved, in this process (1,000 models; MADENGINE_BENCH=short: 50).
Printed as a ratio; only correctness is asserted (every result is in the history)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from zoo import Zoo, run_pytest

from pytest_madengine.history.store import Store

SHORT = os.environ.get("MADENGINE_BENCH") == "short"
MODELS = 50 if SHORT else 1000
ARGS = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "-n", "2")


def test_storing_results_against_not_storing(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path / "zoo")
    zoo.dockerfile()
    zoo.script("m/run.sh")
    zoo.models([zoo.model(f"m{i:04d}", script="scripts/m/run.sh") for i in range(MODELS)])
    warm = run_pytest(zoo.root, *ARGS, "-k", "m0000", "--madengine-perf-csv", str(tmp_path / "warm.csv"))
    assert warm.returncode == 0, warm.stdout
    url = f"sqlite:///{tmp_path / 'history.db'}"
    started = time.perf_counter()
    plain = run_pytest(zoo.root, *ARGS, "--madengine-perf-csv", str(tmp_path / "plain.csv"))
    plain_s = time.perf_counter() - started
    started = time.perf_counter()
    stored = run_pytest(
        zoo.root,
        *ARGS,
        "--madengine-storage",
        url,
        "--madengine-autosave",
        "--madengine-perf-csv",
        str(tmp_path / "s.csv"),
    )
    stored_s = time.perf_counter() - started
    assert plain.returncode == 0 and stored.returncode == 0, stored.stdout
    store = Store(url)
    (run,) = store.runs()
    found = store.run(run.run_id)
    assert found is not None and len(found[1]) == MODELS
    print(
        f"\nhistory benchmark{' (short)' if SHORT else ''}: {MODELS} models, without storage {plain_s:.2f} s, "
        f"with autosave {stored_s:.2f} s, ratio {stored_s / plain_s:.3f} (target < 1.05)"
    )

"""A perf.csv history (ours or madengine's) into run records: teams start with their past.

A perf.csv has no run column: madengine appends each run's rows. A run ends where a (model, arch)
it already holds comes again, or where `build_number` changes; our own perf.csv says its run in the
`run_id` column when it has one.
"""

from __future__ import annotations

import csv
import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .records import RunRecord, StoredResult


def split_runs(rows: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    found: list[list[dict[str, str]]] = []
    seen: set[tuple[str, str]] = set()
    previous: dict[str, str] | None = None
    for row in rows:
        key = (row.get("model", ""), row.get("gpu_architecture", ""))
        changed = previous is not None and any(
            row.get(name, "") != previous.get(name, "") for name in ("build_number", "run_id")
        )
        if not found or key in seen or changed:
            found.append([])
            seen = set()
        found[-1].append(row)
        seen.add(key)
        previous = row
    return found


def read_perf_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(handle)]
    if rows and not {"model", "performance", "status"} <= set(rows[0]):
        raise ValueError(f"{path} lacks the model, performance and status columns")
    return rows


def imported_runs(path: Path) -> list[tuple[RunRecord, list[StoredResult]]]:
    """Each run of the file with its results; runs are dated a minute apart before the file's time, in file order."""
    groups = split_runs(read_perf_csv(path))
    stamp = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    found = []
    for index, group in enumerate(groups):
        run_id = group[0].get("run_id") or f"import-{digest}-{index:04d}"
        started = stamp - timedelta(minutes=len(groups) - index)
        first = group[0]
        record = RunRecord(
            run_id=run_id,
            started=started,
            ended=started,
            git_commit=first.get("git_commit", ""),
            host=first.get("machine_name", ""),
            source=f"import {path.name}",
        )
        found.append((record, [StoredResult.from_row(run_id, row) for row in group]))
    return found

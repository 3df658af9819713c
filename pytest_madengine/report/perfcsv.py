"""Append rows to a madengine-compatible perf.csv without ever rewriting what is there."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

from filelock import FileLock

from ..errors import MadengineError

# madengine v2's PERF_CSV_HEADER, in order, plus our `reason`.
HEADER: tuple[str, ...] = (
    "model",
    "n_gpus",
    "nnodes",
    "gpus_per_node",
    "training_precision",
    "pipeline",
    "args",
    "tags",
    "docker_file",
    "base_docker",
    "docker_sha",
    "docker_image",
    "git_commit",
    "machine_name",
    "deployment_type",
    "launcher",
    "gpu_architecture",
    "performance",
    "metric",
    "relative_change",
    "status",
    "build_duration",
    "test_duration",
    "dataname",
    "data_provider_type",
    "data_size",
    "data_download_duration",
    "build_number",
    "additional_docker_run_options",
    "reason",
)


class PerfCsvError(MadengineError):
    """The target file exists with a header we must not append to."""


def existing_header(path: Path) -> list[str] | None:
    """The header of an existing non-empty file, or None when there is nothing yet."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            first = handle.readline()
    except FileNotFoundError:
        return None
    if not first.strip():
        return None
    return next(csv.reader(io.StringIO(first)))


def check_writable(path: Path) -> None:
    """Refuse, before any model runs, a file whose header differs from ours."""
    header = existing_header(path)
    if header is not None and tuple(h.strip() for h in header) != HEADER:
        missing = [h for h in HEADER if h not in header]
        extra = [h for h in header if h not in HEADER]
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing)}")
        if extra:
            detail.append(f"extra {', '.join(extra)}")
        raise PerfCsvError(
            f"{path} exists with a different header ({'; '.join(detail) or 'columns in another order'}); "
            "it is left untouched. Pass --madengine-perf-csv with another path, or move the file aside."
        )


def append_rows(path: Path, rows: Iterable[Mapping[str, str]]) -> int:
    """Append under a file lock (several sessions may share one perf.csv); return rows written."""
    rows = list(rows)
    if not rows:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        check_writable(path)
        new = existing_header(path) is None
        # A file that does not end in a newline (a crash mid-write elsewhere) would glue rows together.
        needs_newline = not new and _lacks_trailing_newline(path)
        with path.open("a", newline="", encoding="utf-8") as handle:
            if needs_newline:
                handle.write("\n")
            writer = csv.DictWriter(handle, fieldnames=HEADER, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in HEADER})
            handle.flush()
    return len(rows)


def _lacks_trailing_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return False
        handle.seek(-1, 2)
        return handle.read(1) not in (b"\n", b"\r")

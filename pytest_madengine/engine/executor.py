"""The seam for where a model runs: a prepared model goes in, its outcome comes out.

The local Docker engine (`local.LocalDocker`) is the first implementation. A new backend (a batch
scheduler, a remote host) implements `Executor`, and `Runtime.executor()` is where the session picks
it; the run of an item (start, wait with a deadline, logs and files, keep or remove, cleanup of a run)
goes through nothing else. Images are built and published by the engine module beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import MadengineError
from ..gpus.lease import Lease


@dataclass(frozen=True)
class Workspace:
    """What the model sees under /myworkspace: its own run directory (a copy: nothing it writes
    reaches the user's tree), the zoo's shared `scripts/`, and extra files by name in the run directory
    (pre/post scripts, the step driver)."""

    run_dir: Path
    scripts_root: Path
    extra: Mapping[str, Path | bytes] = field(default_factory=dict)
    writes_scripts: bool = False  # pre/post scripts (MAD's rocEnvTool) write beside themselves under ../scripts


@dataclass(frozen=True)
class PreparedRun:
    """Everything a backend needs to run one model, decided before it starts."""

    image: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    gpus: Lease
    labels: Mapping[str, str]  # the run id among them: cleanup finds a run's work by it
    workspace: Workspace
    mounts: Mapping[str, str] = field(default_factory=dict)  # path inside -> host path (the context's docker_mounts)
    fetch: tuple[str, ...] = ()  # run-directory files to bring back (multiple_results)
    # `docker run` options as docker SDK arguments (madengine's defaults, then the card's own): what a
    # container-based backend applies on top of the image, command, environment and GPUs above.
    run_options: Mapping[str, Any] = field(default_factory=dict)
    limit_s: float = 0.0  # the model's limit, for a backend that enforces it where the model runs (0: none)
    whole_nodes: bool = False  # n_gpus -1: every GPU of its nodes, and the nodes to itself
    nnodes: int = 1  # a backend that spans machines runs it on this many nodes, `gpus` on each
    node_runner: str = ""  # MAD_MULTI_NODE_RUNNER across nodes, naming $rank, $addr, $port, $count (zoo.launcher)
    # MAD's slurm_multi: `command` runs on the first node outside any container and starts its own;
    # `batch` is the card's `slurm` block under the context's (nodes, gpus_per_node, time, exclusive).
    self_managed: bool = False
    batch: Mapping[str, Any] = field(default_factory=dict)
    # Backend options a conftest adjusts before the start (the container_options hook, for Docker).
    customize: Callable[[dict[str, Any]], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int | None  # None when the run was killed at the deadline
    log: str
    timed_out: bool
    duration: float
    container_id: str
    files: Mapping[str, bytes] = field(default_factory=dict)  # fetched from the run directory
    placement: Mapping[str, str] = field(default_factory=dict)  # where a scheduler ran it: node, job, gpus, nnodes
    rank_logs: Mapping[int, str] = field(default_factory=dict)  # a multi-node run: the other nodes' logs, by rank


@dataclass(frozen=True)
class Deadline:
    """How long a run may take (0: no limit), where that limit came from, and what to do as soon as
    the model's processes are gone (give its GPUs back) before the slower collection of its logs."""

    seconds: float
    source: str = "default"
    on_stopped: Callable[[], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Kept:
    """A finished run kept for inspection: how to get in and how to clean up afterwards."""

    enter: str
    remove: str


class ExecutorLost(MadengineError):
    """The backend went away while a model ran (the Docker daemon, a scheduler)."""

    perf_reason = "executor lost"


class StartError(MadengineError):
    """The backend refused to start the model (a missing image, a bad device...)."""


class RunHandle(Protocol):
    @property
    def id(self) -> str: ...


class Executor(Protocol):
    """Run a prepared model and give back its outcome; every method may raise `ExecutorLost`."""

    def start(self, run: PreparedRun) -> RunHandle:
        """Start it, or raise `StartError` leaving nothing behind."""

    def wait(self, handle: RunHandle, deadline: Deadline, output: Callable[[str], None] | None = None) -> RunOutcome:
        """Until it exits, or kill it at the deadline; then its log and fetched files. `output`
        gets the log as it comes, while the model runs."""

    def copy_out(self, handle: RunHandle, dest: Path, subdir: str = "") -> Path | None:
        """The run directory (or a folder in it) as the model left it, copied into `dest`: for
        parse_result hooks and tools' output; None when the folder is not there."""

    def finish(self, handle: RunHandle, keep: bool) -> Kept | None:
        """Remove what the run left, or keep a copy to inspect (its GPUs go back to the pool either way,
        through the lease)."""

    def remove_run(self, run_id: str, worker: str | None = None) -> int:
        """Remove whatever a run (or one of its workers) left behind; how many were removed."""

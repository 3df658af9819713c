"""The executor for a SLURM cluster: each item is one blocking `srun` from its worker, and SLURM (not
us) chooses the node and the GPUs. The runner it sends on srun's standard input does the work on the
node (`slurm_runner`); this side submits, streams, takes the runner's frames apart and cancels."""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import MadengineError
from .container import workspace_archive
from .docker_cli import cli_flags
from .executor import Deadline, ExecutorLost, Kept, PreparedRun, RunHandle, RunOutcome, StartError
from .labels import RUN_LABEL, WORKER_LABEL
from .local import docker_options
from .slurm_batch import BatchJob, finish_batch, run_folder, submit, wait_batch
from .slurm_frames import NodeReport, exit_code, placement_of, read_nodes
from .slurm_options import SlurmOptions, job_name
from .slurm_runner import RunnerInput, runner_script

PULL_MARGIN_S = 600  # SLURM's --time covers the image pull too; the runner enforces the model's own limit


class NoResources(MadengineError):
    """SLURM could not give the job its resources within the queue timeout."""

    perf_reason = "no resources"


def srun_command(run: PreparedRun, options: SlurmOptions, limit_s: float) -> list[str]:
    """One task per node, the GPUs by count (SLURM picks them), nothing of the submitter's environment;
    across nodes, each output line labelled with its task (the node's rank)."""
    labels = run.labels
    minutes = max(1, math.ceil((limit_s + PULL_MARGIN_S) / 60)) if limit_s > 0 else 0
    command = [
        "srun",
        f"--job-name={job_name(str(labels.get(RUN_LABEL, '')))}",
        f"--comment={labels.get(WORKER_LABEL, '')} {labels.get('pytest-madengine.test', '')}",
        f"--nodes={run.nnodes}",
        "--ntasks-per-node=1",
        "--export=NONE",
        "--kill-on-bad-exit=1",
        *(["--label"] if run.nnodes > 1 else []),
    ]
    count = run.gpus.count
    command += ["--exclusive"] if run.whole_nodes else []
    command += [f"--gres=gpu:{count}"] if count else []
    if minutes:
        command.append(f"--time={minutes}")
    for flag, value in (
        ("--partition", options.partition),
        ("--account", options.account),
        ("--qos", options.qos),
        ("--reservation", options.reservation),
        ("--constraint", options.constraint),
    ):
        if value:
            command.append(f"{flag}={value}")
    if options.queue_timeout_s:
        command.append(f"--immediate={options.queue_timeout_s}")
    return [*command, *options.extra_args, "/bin/bash", "-s"]


@dataclass
class SlurmJob:
    """The slurm executor's run handle: the srun process and what its nodes' runners reported."""

    process: subprocess.Popen[str]
    fetch: tuple[str, ...]
    nnodes: int = 1  # across nodes, srun labels each line with the node's rank
    started: float = field(default_factory=time.monotonic)
    nodes: dict[int, NodeReport] = field(default_factory=dict)  # by rank, filled as the output comes
    stderr: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.nnodes > 1

    @property
    def reported(self) -> bool:
        """Every node's runner said all it had to say; they may still be cleaning up."""
        return len(self.nodes) >= self.nnodes and all(node.done for node in self.nodes.values())

    @property
    def job_id(self) -> str:
        return next((n.placement["job"] for n in self.nodes.values() if n.placement.get("job")), "")

    @property
    def id(self) -> str:
        return self.job_id or f"srun-{self.process.pid}"


class SlurmExecutor:
    """Runs every item as a SLURM job (see module doc). `registry_image` maps an image tag to where a
    node pulls it from (the manifest's registry_image)."""

    def __init__(self, options: SlurmOptions, registry_image: Callable[[str], str] = lambda tag: "") -> None:
        self._options = options
        self._registry_image = registry_image

    def start(self, run: PreparedRun) -> SlurmJob | BatchJob:
        if run.self_managed:
            if not self._options.shared_dir:
                raise StartError("a slurm_multi card needs --madengine-slurm-shared-dir (a directory every node sees)")
            return submit(run, self._options, Path(self._options.shared_dir))
        options = docker_options(run)
        flags = cli_flags({k: v for k, v in options.items() if k not in ("mounts",)})
        runner = RunnerInput(
            image=run.image,
            command=list(options.get("command") or run.command),
            flags=flags,
            environment=dict(options.get("environment") or run.environment),
            archive=workspace_archive(run.workspace),
            fetch=run.fetch,
            limit_s=run.limit_s,
            vendor=run.environment.get("MAD_GPU_VENDOR"),
            registry_image=self._registry_image(run.image),
            nnodes=run.nnodes,
            node_runner=run.node_runner,
        )
        try:
            process = subprocess.Popen(
                srun_command(run, self._options, run.limit_s),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # Ctrl-C reaches the worker, not srun: scancel ends the job
            )
        except OSError as exc:
            raise StartError(f"cannot run srun: {exc}") from None
        assert process.stdin is not None
        process.stdin.write(runner_script(runner))
        process.stdin.close()
        return SlurmJob(process, tuple(run.fetch), nnodes=run.nnodes)

    def wait(self, handle: RunHandle, deadline: Deadline, output: Callable[[str], None] | None = None) -> RunOutcome:
        if isinstance(handle, BatchJob):
            return wait_batch(handle, deadline, _cancel, output)
        assert isinstance(handle, SlurmJob)
        process = handle.process
        assert process.stdout is not None and process.stderr is not None
        errors = threading.Thread(target=_drain, args=(process.stderr, handle.stderr), daemon=True)
        errors.start()
        if not read_nodes(process.stdout, handle.nodes, handle.labelled, output, handle.nnodes):
            process.wait()  # srun ended before every node was done: its stderr says why
            errors.join(5)
        if deadline.on_stopped is not None:
            deadline.on_stopped()
        return _outcome(handle, deadline)

    def copy_out(self, handle: RunHandle, dest: Path, subdir: str = "") -> Path | None:
        """A batch job's folder is on the shared directory; a container's run directory is gone with it
        (its fetched files came back framed)."""
        source = handle.workdir / subdir if isinstance(handle, BatchJob) else None
        if source is None or not source.is_dir():
            return None
        shutil.copytree(source, dest / source.name, dirs_exist_ok=True)
        return dest / source.name

    def finish(self, handle: RunHandle, keep: bool) -> Kept | None:
        """The runner removes its container; a job still running (an interrupted test) is cancelled."""
        if isinstance(handle, BatchJob):
            kept = finish_batch(handle, _cancel, keep)
            return Kept(**kept) if kept else None
        assert isinstance(handle, SlurmJob)
        if handle.process.poll() is None and handle.reported:
            # Its runners are removing their containers: the test ends when they are gone.
            with contextlib.suppress(subprocess.TimeoutExpired):
                handle.process.wait(timeout=60)
        if handle.process.poll() is None:
            job = handle.job_id
            if job:
                subprocess.run(["scancel", job], capture_output=True, check=False)
            try:
                handle.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                subprocess.run(["scancel", "--signal=KILL", job or ""], capture_output=True, check=False)
        return None

    def remove_run(self, run_id: str, worker: str | None = None) -> int:
        """Cancel the run's jobs (one worker's, when named): scancel, never a signal to srun."""
        listed = subprocess.run(
            ["squeue", "-h", "-n", job_name(run_id), "-o", "%i %k"], capture_output=True, text=True, check=False
        )
        jobs = [
            line.split()[0]
            for line in listed.stdout.splitlines()
            if line.strip() and (worker is None or f" {worker} " in f" {line} ")
        ]
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True, check=False)
        if worker is None and self._options.shared_dir:
            shutil.rmtree(run_folder(Path(self._options.shared_dir), run_id), ignore_errors=True)
        return len(jobs)


def _cancel(job_id: str) -> None:
    """scancel, never a signal to srun or sbatch (srun escalates to SIGKILL)."""
    if job_id:
        subprocess.run(["scancel", job_id], capture_output=True, check=False)


def _drain(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line)


def _outcome(job: SlurmJob, deadline: Deadline) -> RunOutcome:
    """Rank 0's log and files; any node that failed fails the run (its word is added to the log),
    and one that timed out makes it a timeout."""
    stderr = "".join(job.stderr).strip()
    last = stderr.splitlines()[-1] if stderr else ""
    if not any(n.placement for n in job.nodes.values()) and (
        "Unable to allocate resources" in stderr or "immediate" in stderr.lower()
    ):
        raise NoResources(f"SLURM gave no resources in time: {last}")
    nodes = job.nodes or {0: NodeReport()}
    for rank, node in sorted(nodes.items()):
        if node.ending.startswith("error") or not node.ending:
            why = node.ending[len("error") :].strip() or last or "no word from the node"
            said = [line for line in "".join(node.log).splitlines() if line.startswith("docker:")][-1:]
            why += f": {said[0]}" if said else ""  # the engine's own word on a container it refused
            where = f" (rank {rank} on {node.placement.get('node', '?')})" if job.labelled else ""
            raise ExecutorLost(f"SLURM job {job.job_id or '?'}{where}: {why}")
    first = nodes.get(0, NodeReport())
    codes = {rank: exit_code(node.ending) for rank, node in nodes.items()}
    failed = [rank for rank in sorted(codes) if rank != 0 and codes[rank] not in (0, None)]
    log = "".join(first.log) + "".join(
        f"[pytest-madengine] rank {rank} on {nodes[rank].placement.get('node', '?')} exited with {codes[rank]}\n"
        for rank in failed
    )
    code = codes.get(0)
    return RunOutcome(
        exit_code=code if code or not failed else codes[failed[0]],
        log=log,
        timed_out=any(node.ending == "timeout" for node in nodes.values()),
        duration=time.monotonic() - job.started,
        container_id=job.job_id,
        files=dict(first.files),
        placement=placement_of(nodes),
        rank_logs={rank: "".join(node.log) for rank, node in nodes.items() if rank != 0},
    )


__all__ = ["NoResources", "SlurmExecutor", "SlurmJob", "SlurmOptions", "job_name", "srun_command"]

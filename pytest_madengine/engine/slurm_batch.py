"""MAD's self-managed multi-node cards (launcher slurm_multi) as SLURM batch jobs.

The card's script is itself a launcher: it runs on the first node of its allocation and starts the
per-node containers with srun. As madengine does, we run `bash <script> <args>` in the script's folder
with the card's env_vars exported, but as `sbatch --wait` from the item's worker, in a copy of the zoo's
scripts/ under the shared directory every node sees; the job's output file there is the run's log.
Nothing secret goes in: SLURM keeps a batch script on its controller's disk.
"""

from __future__ import annotations

import math
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .executor import Deadline, ExecutorLost, PreparedRun, RunOutcome, StartError
from .labels import RUN_LABEL, TEST_LABEL, WORKER_LABEL
from .slurm_frames import NodeReport, exit_code
from .slurm_options import SlurmOptions, job_name
from .slurm_runner import FRAME

POLL_S = 0.25  # how often the job's output file is read while it runs


@dataclass
class BatchJob:
    """The handle of a batch job: sbatch --wait, the job's folder, what its output said so far."""

    process: subprocess.Popen[str]
    folder: Path  # under the shared directory; removed when the item ends
    workdir: Path  # where the script runs, its result files beside it
    fetch: tuple[str, ...]
    started: float = field(default_factory=time.monotonic)
    report: NodeReport = field(default_factory=NodeReport)
    timed_out: bool = False

    @property
    def job_id(self) -> str:
        return self.report.placement.get("job", "")

    @property
    def id(self) -> str:
        return self.job_id or f"sbatch-{self.process.pid}"

    @property
    def output(self) -> Path:
        return self.folder / "job.out"


def run_folder(shared_dir: Path, run_id: str) -> Path:
    return shared_dir / f"pmad-{run_id}"


def sbatch_command(run: PreparedRun, options: SlurmOptions, output: Path, script: Path) -> list[str]:
    """sbatch with the allocation the card asks for: `nodes` nodes, its GPUs per node, whole nodes when
    exclusive, its `time` (else the model's limit in minutes), and the session's partition and the like."""
    labels, batch = run.labels, run.batch
    command = [
        "sbatch",
        "--parsable",
        "--wait",
        f"--job-name={job_name(str(labels.get(RUN_LABEL, '')))}",
        f"--comment={labels.get(WORKER_LABEL, '')} {labels.get(TEST_LABEL, '')}",
        f"--nodes={run.nnodes}",
        "--export=NONE",
        f"--output={output}",
    ]
    gpus = str(batch.get("gpus_per_node", "") or "")
    command += [f"--gres=gpu:{gpus}"] if gpus.isdigit() and int(gpus) > 0 else []
    command += ["--exclusive"] if run.whole_nodes else []
    if batch.get("time"):
        command.append(f"--time={batch['time']}")
    elif run.limit_s > 0:
        command.append(f"--time={max(1, math.ceil(run.limit_s / 60))}")
    for name in ("partition", "account", "qos", "reservation", "constraint"):
        value = getattr(options, name) or batch.get(name, "")
        if value:
            command.append(f"--{name}={value}")
    return [*command, *options.extra_args, str(script)]


def batch_script(run: PreparedRun, workdir: Path) -> str:
    """The job: say where it runs, export the environment, run the card's script, say how it ended."""
    exports = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in run.environment.items())
    return f"""#!/bin/bash
# written by pytest-madengine: a self-managed (slurm_multi) card
export PATH=${{PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}}
export SLURM_EXPORT_ENV=ALL  # the job itself exports nothing of the submitter's; its own sruns export its environment
echo "{FRAME}placed node=${{SLURM_JOB_NODELIST:-$(hostname -s)}} job=${{SLURM_JOB_ID:-0}} gpus=${{SLURM_JOB_GPUS:-}}==="
{exports}
cd {shlex.quote(str(workdir))} || {{ echo "{FRAME}error cannot enter {workdir}==="; exit 3; }}
{shlex.join(run.command)}
code=$?
echo "{FRAME}exit $code==="
exit $code
"""


def submit(run: PreparedRun, options: SlurmOptions, shared_dir: Path) -> BatchJob:
    """Copy the zoo's scripts/ into a folder of the shared directory, write the job, submit it."""
    folder = run_folder(shared_dir, str(run.labels.get(RUN_LABEL, ""))) / uuid.uuid4().hex[:12]
    scripts = run.workspace.scripts_root
    try:
        inside = run.workspace.run_dir.resolve().relative_to(scripts.resolve())
        shutil.copytree(scripts, folder / "scripts", symlinks=True)
        workdir = folder / "scripts" / inside
    except ValueError:  # the card's folder is not under scripts/: it goes alone
        shutil.copytree(run.workspace.run_dir, folder / "run_directory", symlinks=True)
        workdir = folder / "run_directory"
    except OSError as exc:
        raise StartError(f"cannot copy the scripts into the shared directory {shared_dir}: {exc}") from None
    script = folder / "job.sh"
    script.write_text(batch_script(run, workdir), encoding="utf-8")
    try:
        process = subprocess.Popen(
            sbatch_command(run, options, folder / "job.out", script),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the worker, which scancels the job
        )
    except OSError as exc:
        raise StartError(f"cannot run sbatch: {exc}") from None
    return BatchJob(process, folder, workdir, tuple(run.fetch))


def wait_batch(
    job: BatchJob, deadline: Deadline, cancel: Callable[[str], None], output: Callable[[str], None] | None
) -> RunOutcome:
    """Follow the job's output file until sbatch returns; at the deadline, cancel the job (a timeout)."""
    limit_at = job.started + deadline.seconds if deadline.seconds > 0 else math.inf
    position = 0
    while True:
        done = _poll(job.process)
        position = _follow(job, position, output)
        if done:
            break
        if time.monotonic() >= limit_at and not job.timed_out:
            job.timed_out = True
            cancel(job.job_id)
    position = _follow(job, position, output)
    if deadline.on_stopped is not None:
        deadline.on_stopped()
    return _outcome(job)


def _poll(process: subprocess.Popen[str]) -> bool:
    try:
        process.wait(timeout=POLL_S)
    except subprocess.TimeoutExpired:
        return False
    return True


def _follow(job: BatchJob, position: int, output: Callable[[str], None] | None) -> int:
    """The output file's complete new lines into the job's report (and `output`); the new position."""
    try:
        with job.output.open("rb") as handle:
            handle.seek(position)
            for raw in handle.readlines():
                if not raw.endswith(b"\n"):
                    break  # the rest of that line is still being written
                position += len(raw)
                line = raw.decode("utf-8", errors="replace")
                if job.report.take(line) and output is not None:
                    output(line)
    except FileNotFoundError:
        pass
    return position


def _outcome(job: BatchJob) -> RunOutcome:
    stderr = (job.process.stderr.read() if job.process.stderr else "").strip()
    report = job.report
    if not job.timed_out and not report.ending:
        why = stderr.splitlines()[-1] if stderr else f"sbatch exited with {job.process.returncode}"
        raise ExecutorLost(f"SLURM batch job {job.job_id or '?'}: {why}")
    if report.ending.startswith("error"):
        raise ExecutorLost(f"SLURM batch job {job.job_id or '?'}: {report.ending[len('error') :].strip()}")
    files = {name: (job.workdir / name).read_bytes() for name in job.fetch if (job.workdir / name).is_file()}
    nodes = _hostnames(report.placement.get("node", ""))
    placement = {**report.placement, "node": ",".join(nodes), "nnodes": str(len(nodes) or 1), "launcher": "slurm_multi"}
    return RunOutcome(
        exit_code=None if job.timed_out else exit_code(report.ending),
        log="".join(report.log),
        timed_out=job.timed_out,
        duration=time.monotonic() - job.started,
        container_id=job.job_id,
        files=files,
        placement=placement,
    )


def _hostnames(nodelist: str) -> list[str]:
    """SLURM's compact node list (`n[1-2],gpu7`) as names; scontrol when it is there."""
    if not nodelist:
        return []
    done = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=False)
    names = done.stdout.split()
    return names or [nodelist]


def finish_batch(job: BatchJob, cancel: Callable[[str], None], keep: bool) -> Mapping[str, str] | None:
    """Cancel the job if it still runs; remove its folder, or keep it and say how to remove it."""
    if job.process.poll() is None:
        cancel(job.job_id)
        try:
            job.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            job.process.kill()
    if keep:
        return {"enter": f"cd {job.workdir}", "remove": f"rm -rf {job.folder}"}
    shutil.rmtree(job.folder, ignore_errors=True)
    return None

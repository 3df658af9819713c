"""What the session asks of SLURM for every job (from the --madengine-slurm-* options, their ini
mirrors or the context's `slurm` block), and the name its jobs go by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SlurmOptions:
    partition: str = ""
    account: str = ""
    qos: str = ""
    reservation: str = ""
    constraint: str = ""
    extra_args: tuple[str, ...] = ()  # passed to srun as they are
    queue_timeout_s: int = 0  # 0: wait as long as SLURM makes it
    shared_dir: str = ""  # a directory every node sees: slurm_multi jobs run in it


def job_name(run_id: str) -> str:
    return f"pmad-{run_id}"

"""The SLURM backend's pure parts: the srun line, sinfo's capacity, the docker CLI flags, the runner."""

from __future__ import annotations

import io
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from docker.types import DeviceRequest, Ulimit

from pytest_madengine.engine.docker_cli import cli_flags
from pytest_madengine.engine.executor import Deadline, PreparedRun, Workspace
from pytest_madengine.engine.slurm import SlurmJob, SlurmOptions, _outcome, srun_command
from pytest_madengine.engine.slurm_capacity import node_gpus, parse_sinfo
from pytest_madengine.engine.slurm_frames import NodeReport, read_nodes
from pytest_madengine.engine.slurm_runner import RunnerInput, runner_script
from pytest_madengine.gpus.lease import Lease


def prepared(count: int, whole: bool = False, nnodes: int = 1) -> PreparedRun:
    return PreparedRun(
        image="img",
        command=("bash", "run.sh"),
        environment={},
        gpus=Lease(tuple(range(count))),
        labels={
            "pytest-madengine.run": "abc",
            "pytest-madengine.worker": "gw1",
            "pytest-madengine.test": "m.json::m[x]",
        },
        workspace=Workspace(Path("."), Path("scripts")),
        whole_nodes=whole,
        nnodes=nnodes,
    )


def test_srun_asks_for_the_gpus_by_count_and_exports_nothing() -> None:
    options = SlurmOptions(partition="mi300x", qos="high", extra_args=("--mem=0",), queue_timeout_s=60)
    command = srun_command(prepared(2), options, 90)
    assert command[:2] == ["srun", "--job-name=pmad-abc"]
    assert "--export=NONE" in command and "--gres=gpu:2" in command and "--comment=gw1 m.json::m[x]" in command
    assert "--time=12" in command  # 90 s plus the pull margin, in whole minutes
    assert "--partition=mi300x" in command and "--qos=high" in command and "--immediate=60" in command
    assert command[-3:] == ["--mem=0", "/bin/bash", "-s"]
    whole = srun_command(prepared(4, whole=True), SlurmOptions(), 0)
    assert "--exclusive" in whole and not any(a.startswith("--time") for a in whole)
    assert "--nodes=1" in command and "--label" not in command
    across = srun_command(prepared(2, nnodes=2), SlurmOptions(), 0)
    assert "--nodes=2" in across and "--ntasks-per-node=1" in across and "--label" in across


def test_capacity_from_sinfo() -> None:
    assert node_gpus("gpu:4") == 4 and node_gpus("gpu:mi300x:8(S:0-1)") == 8 and node_gpus("gpu:a:2,gpu:b:2") == 4
    capacity = parse_sinfo({"nodes": [{"name": "n1", "gres": "gpu:4"}, {"name": "n2", "gres": ""}]})
    assert capacity.gpus == {"n1": 4, "n2": 0} and capacity.largest == 4


def test_docker_cli_flags_follow_the_sdk_arguments() -> None:
    flags = cli_flags(
        {
            "image": "img",
            "environment": {"SECRET": "x"},
            "network_mode": "host",
            "cap_add": ["SYS_ADMIN"],
            "volumes": ["/data:/d:ro"],
            "ulimits": [Ulimit(name="nofile", soft=4, hard=8)],
            "device_requests": [DeviceRequest(device_ids=["0", "1"], capabilities=[["gpu"]])],
            "labels": {"pytest-madengine.run": "abc"},
            "privileged": True,
        }
    )
    assert flags == [
        *("--network", "host", "--cap-add", "SYS_ADMIN", "--volume", "/data:/d:ro", "--ulimit", "nofile=4:8"),
        *("--gpus", '"device=0,1"', "--privileged", "--label", "pytest-madengine.run=abc"),
    ]
    assert "SECRET" not in " ".join(flags)


def test_the_runner_is_valid_bash_and_keeps_secrets_off_its_command_lines() -> None:
    script = runner_script(
        RunnerInput(
            "img",
            ["bash", "run.sh"],
            ["--label", "a=b"],
            {"MAD_SECRETS_TOKEN": "s3cret"},
            b"x" * 100,
            ("o.csv",),
            5,
            "AMD",
        )
    )
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0
    command_lines = [line for line in script.splitlines() if "docker run" in line]
    assert command_lines and all("s3cret" not in line for line in command_lines)
    environment = {"MASTER_ADDR": "stale", "MASTER_PORT": "31000", "KEEP": "1"}
    multi = RunnerInput("img", ["bash", "run.sh"], [], environment, nnodes=2, node_runner="torchrun --node_rank=$rank")
    across = runner_script(multi)
    assert subprocess.run(["bash", "-n"], input=across, text=True, check=False).returncode == 0
    assert "MASTER_ADDR=stale" not in across and "KEEP=1" in across and "port=31000" in across
    with pytest.raises(ValueError, match="multi-node runner form"):
        runner_script(replace(multi, node_runner="torchrun; rm -rf /"))


def test_frames_are_taken_apart_and_the_log_passes_through() -> None:
    stream = io.StringIO(
        "===pmad:placed node=n2 job=17 gpus=2,3===\n===pmad:started===\nhello\n===pmad:exit 0===\n"
        "===pmad:file o.csv===\n===pmad:end===\n"
    )
    seen: list[str] = []
    nodes: dict[int, NodeReport] = {}
    read_nodes(stream, nodes, False, seen.append)
    assert list(nodes) == [0] and nodes[0].placement == {"node": "n2", "job": "17", "gpus": "2,3"}
    assert (seen, nodes[0].ending, nodes[0].files) == (["hello\n"], "exit 0", {"o.csv": b""})


def test_across_nodes_rank_0_speaks_for_the_run_and_a_failed_rank_fails_it() -> None:
    stream = io.StringIO(
        "0: ===pmad:placed node=n1 job=9 gpus=0,1===\n1: ===pmad:placed node=n2 job=9 gpus=2,3===\n"
        "1: rank one says 1: hi\n0: performance: 5 x\n1: ===pmad:exit 3===\n0: ===pmad:exit 0===\n"
    )
    seen: list[str] = []
    job = SlurmJob(process=None, fetch=(), nnodes=2)  # type: ignore[arg-type]
    read_nodes(stream, job.nodes, True, seen.append)
    assert seen == ["performance: 5 x\n"]  # only rank 0 goes out live
    outcome = _outcome(job, Deadline(0))
    assert outcome.exit_code == 3 and not outcome.timed_out
    assert outcome.log.splitlines() == ["performance: 5 x", "[pytest-madengine] rank 1 on n2 exited with 3"]
    assert outcome.rank_logs == {1: "rank one says 1: hi\n"}
    assert outcome.placement == {"node": "n1,n2", "job": "9", "gpus": "n1:0,1;n2:2,3", "nnodes": "2"}
    job.nodes[1].ending = "timeout"
    assert _outcome(job, Deadline(0)).timed_out

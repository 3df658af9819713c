"""Shape results into perf.csv rows and JUnit properties (plain dicts that cross xdist)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from .results import Result


@dataclass(frozen=True)
class RowFacts:
    """What every row of one item shares."""

    n_gpus: int
    training_precision: str
    args: str
    tags: tuple[str, ...]
    docker_file: str
    gpu_architecture: str
    base_docker: str = ""
    docker_sha: str = ""
    docker_image: str = ""
    build_duration: float = 0.0
    test_duration: float = 0.0
    additional_docker_run_options: str = ""


def perf_row(result: Result, facts: RowFacts) -> dict[str, str]:
    return {
        "model": result.model,
        "n_gpus": str(facts.n_gpus),
        "nnodes": "1",
        "gpus_per_node": str(facts.n_gpus),
        "training_precision": facts.training_precision,
        "pipeline": os.environ.get("pipeline", ""),  # noqa: SIM112 (madengine reads $pipeline)
        "args": facts.args,
        "tags": ",".join(facts.tags),
        "docker_file": facts.docker_file,
        "base_docker": facts.base_docker,
        "docker_sha": facts.docker_sha,
        "docker_image": facts.docker_image,
        "git_commit": "",
        "machine_name": socket.gethostname(),
        "deployment_type": os.environ.get("MAD_DEPLOYMENT_TYPE", "local"),
        "launcher": os.environ.get("MAD_LAUNCHER", "docker"),
        "gpu_architecture": facts.gpu_architecture,
        "performance": result.performance,
        "metric": result.metric,
        "relative_change": "",
        "status": result.status,
        "build_duration": f"{facts.build_duration:.3f}" if facts.build_duration else "0",
        "test_duration": f"{facts.test_duration:.3f}" if facts.test_duration else "",
        "dataname": "",
        "data_provider_type": "",
        "data_size": "",
        "data_download_duration": "",
        "build_number": os.environ.get("BUILD_NUMBER", "0"),
        "additional_docker_run_options": facts.additional_docker_run_options,
        "reason": result.reason,
    }


JUNIT_PROPERTIES = ("model", "performance", "metric", "status", "gpu_architecture", "docker_image", "reason")


def junit_properties(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Properties named like the CSV columns; `reason` only when not SUCCESS."""
    props: list[tuple[str, str]] = []
    for row in rows:
        for name in JUNIT_PROPERTIES:
            if name == "reason" and row.get("status") == "SUCCESS":
                continue
            if name == "model" and len(rows) == 1:
                continue
            props.append((name, row.get(name, "")))
    return props

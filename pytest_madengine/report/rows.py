"""Shape results into perf.csv rows and JUnit properties, and what of them crosses xdist."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .baseline import Gate
from .results import FAILURE, Result


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
    git_commit: str = ""
    machine_name: str = ""  # "": this host
    deployment_type: str = ""  # "": $MAD_DEPLOYMENT_TYPE, else local
    nnodes: int = 1
    launcher: str = ""  # "": $MAD_LAUNCHER, else docker
    dataname: str = ""
    data_provider_type: str = ""
    data_size: str = ""
    data_download_duration: str = ""


def perf_row(result: Result, facts: RowFacts, judged: Gate | None = None) -> dict[str, str]:
    """The 29 columns; a result that regressed against its baseline (`judged`) is a FAILURE here."""
    judged = judged or Gate()
    status, reason = (FAILURE, "regression") if judged.regression else (result.status, result.reason)
    return {
        "model": result.model,
        "n_gpus": str(facts.n_gpus * facts.nnodes),  # madengine: nnodes x gpus_per_node
        "nnodes": str(facts.nnodes),
        "gpus_per_node": str(facts.n_gpus),
        "training_precision": facts.training_precision,
        "pipeline": os.environ.get("pipeline", ""),  # noqa: SIM112 (madengine reads $pipeline)
        "args": facts.args,
        "tags": ",".join(facts.tags),
        "docker_file": facts.docker_file,
        "base_docker": facts.base_docker,
        "docker_sha": facts.docker_sha,
        "docker_image": facts.docker_image,
        "git_commit": facts.git_commit,
        "machine_name": facts.machine_name or socket.gethostname(),
        "deployment_type": facts.deployment_type or os.environ.get("MAD_DEPLOYMENT_TYPE", "local"),
        "launcher": facts.launcher or os.environ.get("MAD_LAUNCHER", "docker"),
        "gpu_architecture": facts.gpu_architecture,
        "performance": result.performance,
        "metric": result.metric,
        "relative_change": judged.relative_change,
        "status": status,
        "build_duration": f"{facts.build_duration:.3f}" if facts.build_duration else "0",
        "test_duration": f"{facts.test_duration:.3f}" if facts.test_duration else "",
        "dataname": facts.dataname,
        "data_provider_type": facts.data_provider_type,
        "data_size": facts.data_size,
        "data_download_duration": facts.data_download_duration,
        "build_number": os.environ.get("BUILD_NUMBER", "0"),
        "additional_docker_run_options": facts.additional_docker_run_options,
        "reason": reason,
    }


JUNIT_PROPERTIES = ("model", "performance", "metric", "status", "gpu_architecture", "docker_image", "reason")


def junit_properties(rows: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
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


@dataclass(frozen=True)
class ResultRow:
    """One result as every writer sees it: the perf.csv row, the model's extra columns, the baseline."""

    row: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)
    baseline: str = ""  # as the summaries show it: a value, "no baseline"...; "" when not compared
    comparison: dict[str, Any] = field(default_factory=dict)  # the history gate's numbers, when it judged


@dataclass(frozen=True)
class ItemReport:
    """What one item's report carries to the process that writes reports (xdist serialises it as
    plain JSON): its result rows and, once its image was ready, its manifest entry."""

    rows: tuple[ResultRow, ...] = ()
    build: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": [
                {"row": r.row, "extra": r.extra, "baseline": r.baseline, "comparison": r.comparison} for r in self.rows
            ],
            "build": dict(self.build) if self.build is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemReport:
        rows = tuple(
            ResultRow(dict(r["row"]), dict(r["extra"]), str(r["baseline"]), dict(r.get("comparison") or {}))
            for r in data.get("rows", ())
        )
        build = data.get("build")
        return cls(rows, dict(build) if build is not None else None)

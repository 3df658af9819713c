"""One model run: container options from the spec, image and lease; then the verdict."""

from __future__ import annotations

import os
import re
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.types import DeviceRequest

from .archs import vendor_of
from .container import (
    RUN_DIR,
    RunOutcome,
    StartedContainer,
    fetch_tree,
    script_command,
    wait_container,
)
from .context import ContextError, RunContext, Step
from .labels import HOST_LABEL, PID_LABEL, RUN_LABEL, SESSION_PID_LABEL, TEST_LABEL, WORKER_LABEL
from .lease import Lease
from .models import ModelSpec
from .outcome import Verdict, judge
from .results import SUCCESS, Result


@dataclass(frozen=True)
class ModelRun:
    outcome: RunOutcome
    verdict: Verdict
    log_path: Path


def container_options(
    spec: ModelSpec,
    arch: str,
    image: str,
    lease: Lease,
    run_id: str,
    worker: str,
    nodeid: str,
    session_pid: int | None = None,
    context: RunContext | None = None,
    secrets: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `containers.create`; hooks may adjust them before the start."""
    context = context or RunContext()
    vendor = vendor_of(arch)
    environment = {
        "MAD_MODEL_NAME": spec.name,
        "MAD_SYSTEM_GPU_ARCHITECTURE": arch,
        "MAD_GPU_VENDOR": vendor or "NONE",
        "MAD_SYSTEM_NGPUS": str(lease.system_ngpus),
        "MAD_RUNTIME_NGPUS": str(lease.count),
        "MAD_SYSTEM_GPU_PRODUCT_NAME": lease.product_name,
        "MAD_HOST_GPU_IDS": lease.ids_text,
        "JENKINS_BUILD_NUMBER": os.environ.get("BUILD_NUMBER", "0"),
    }
    if spec.multiple_results:
        environment["MAD_OUTPUT_CSV"] = spec.multiple_results
    environment.update(secrets or {})
    environment.update(context.docker_env_vars)  # last, so they win, as in madengine
    options: dict[str, Any] = {
        "image": image,
        "command": [*DRIVER_COMMAND] if has_steps(context) else script_command(spec, context.model_args),
        "working_dir": RUN_DIR.as_posix(),
        "environment": environment,
        "labels": {
            RUN_LABEL: run_id,
            WORKER_LABEL: worker,
            PID_LABEL: str(os.getpid()),
            SESSION_PID_LABEL: str(session_pid or os.getpid()),
            HOST_LABEL: socket.gethostname(),
            TEST_LABEL: nodeid,
        },
        "detach": True,
    }
    if context.docker_mounts:
        options["volumes"] = {host: {"bind": inside, "mode": "rw"} for inside, host in context.docker_mounts.items()}
    if lease.count and lease.vendor == "AMD":
        options["devices"] = ["/dev/kfd:/dev/kfd:rwm", *(f"{n}:{n}:rwm" for n in lease.render_nodes)]
        options["group_add"] = ["video"]
    elif lease.count and lease.vendor == "NVIDIA":
        options["device_requests"] = [DeviceRequest(device_ids=[str(i) for i in lease.ids], capabilities=[["gpu"]])]
    return options


DRIVER = "madengine_steps.sh"
STEPS_DIR = "madengine_steps"
DRIVER_COMMAND = ("sh", DRIVER)


def has_steps(context: RunContext) -> bool:
    return bool(context.pre_scripts or context.post_scripts)


def step_files(spec: ModelSpec, context: RunContext) -> dict[str, Path | bytes]:
    """Pre/post scripts copied into the run directory (as madengine's `cp -vLR`), and the driver
    that runs them around the model: every word shell-quoted, so nothing the user wrote is parsed
    twice."""
    if not has_steps(context):
        return {}
    files: dict[str, Path | bytes] = {}
    lines = ["#!/bin/sh", "# written by pytest-madengine: pre scripts, the model, post scripts"]

    def step_line(kind: str, index: int, step: Step) -> str:
        source = spec.root / step.path
        if not source.exists():
            raise ContextError(f"{kind}_scripts path {step.path} does not exist under {spec.root}")
        name = f"{STEPS_DIR}/{kind}{index}_{source.name}"  # own folder: no clash with the model's files
        files[name] = source
        words = ["bash", name, *shlex.split(step.args)]
        return f"echo {shlex.quote(f'=== {kind} script {source.name}')}; {shlex.join(words)}"

    for index, step in enumerate(context.pre_scripts):
        lines.append(step_line("pre", index, step) + " || exit $?")
    lines.append(shlex.join(script_command(spec, context.model_args)))
    lines.append("status=$?")
    lines.extend(step_line("post", index, step) for index, step in enumerate(context.post_scripts))
    lines.append('exit "$status"')
    files[DRIVER] = ("\n".join(lines) + "\n").encode()
    return files


def log_file_name(spec: ModelSpec, dockerfile_base: str, arch: str) -> str:
    """madengine's `<name>_<dockerfile base>` plus the arch: `dummy_dummy.ubuntu.amd.gfx942.run.log`."""
    stem = f"{spec.name.replace('/', '_')}_{dockerfile_base}.{arch}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".run.log"


def finish_model(
    spec: ModelSpec,
    started: StartedContainer,
    timeout: int,
    timeout_source: str,
    log_path: Path,
    on_stopped: Callable[[], None] | None = None,
    parse: Callable[[str, Path], list[Result] | None] | None = None,
    workdir: Path | None = None,
) -> ModelRun:
    """Wait for the started container, save its log, and judge the run; `parse` (a conftest's
    parse_result hook) sees the log and a copy of the run directory in `workdir`, and wins."""
    fetch = (spec.multiple_results,) if spec.multiple_results else ()
    outcome = wait_container(started, float(timeout), fetch, on_stopped)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(outcome.log, encoding="utf-8")
    custom = None
    if parse is not None and workdir is not None and outcome.exit_code == 0 and not outcome.timed_out:
        custom = parse(outcome.log, fetch_tree(started, RUN_DIR, workdir))
    if custom:
        verdict = Verdict(tuple(custom), None if all(r.status == SUCCESS for r in custom) else "parse_result hook")
    else:
        verdict = judge(spec.name, outcome, spec.multiple_results, timeout, timeout_source)
    return ModelRun(outcome=outcome, verdict=verdict, log_path=log_path)

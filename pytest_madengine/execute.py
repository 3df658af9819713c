"""One model run: container options from the spec, image and lease; then the verdict."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.types import DeviceRequest

from .archs import vendor_of
from .container import RUN_DIR, RUN_LABEL, RunOutcome, StartedContainer, script_command, wait_container
from .lease import Lease
from .models import ModelSpec
from .outcome import Verdict, judge


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
) -> dict[str, Any]:
    """Keyword arguments for `containers.create`; hooks may adjust them before the start."""
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
    options: dict[str, Any] = {
        "image": image,
        "command": script_command(spec),
        "working_dir": RUN_DIR.as_posix(),
        "environment": environment,
        "labels": {
            RUN_LABEL: run_id,
            "pytest-madengine.worker": worker,
            "pytest-madengine.pid": str(os.getpid()),
            "pytest-madengine.session-pid": str(session_pid or os.getpid()),
            "pytest-madengine.host": socket.gethostname(),
            "pytest-madengine.test": nodeid,
        },
        "detach": True,
    }
    if lease.count and lease.vendor == "AMD":
        options["devices"] = ["/dev/kfd:/dev/kfd:rwm", *(f"{n}:{n}:rwm" for n in lease.render_nodes)]
        options["group_add"] = ["video"]
    elif lease.count and lease.vendor == "NVIDIA":
        options["device_requests"] = [DeviceRequest(device_ids=[str(i) for i in lease.ids], capabilities=[["gpu"]])]
    return options


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
) -> ModelRun:
    """Wait for the started container, save its log, and judge the run."""
    fetch = (spec.multiple_results,) if spec.multiple_results else ()
    outcome = wait_container(started, float(timeout), fetch, on_stopped)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(outcome.log, encoding="utf-8")
    verdict = judge(spec.name, outcome, spec.multiple_results, timeout, timeout_source)
    return ModelRun(outcome=outcome, verdict=verdict, log_path=log_path)

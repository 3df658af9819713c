"""A model made ready to run anywhere: its command, environment, labels and workspace."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..gpus.lease import Lease
from ..zoo.archs import vendor_of
from ..zoo.context import RunContext
from ..zoo.launcher import launcher_of, multi_node_form, multi_node_runner, nnodes_of
from ..zoo.models import ModelSpec
from .executor import PreparedRun, Workspace
from .labels import HOST_LABEL, PID_LABEL, RUN_LABEL, SESSION_PID_LABEL, TEST_LABEL, WORKER_LABEL
from .run_options import default_options, host_has_fuse, merge_options, parse_run_options
from .steps import DRIVER_COMMAND, TOOL_OUTPUT, Extras, has_steps, script_command, step_files


@dataclass(frozen=True)
class RunIdentity:
    """Who runs an item: what the labels say, so that cleanup and reaping can find its work."""

    run_id: str
    worker: str
    nodeid: str
    session_pid: int | None = None

    def labels(self) -> dict[str, str]:
        return {
            RUN_LABEL: self.run_id,
            WORKER_LABEL: self.worker,
            PID_LABEL: str(os.getpid()),
            SESSION_PID_LABEL: str(self.session_pid or os.getpid()),
            HOST_LABEL: socket.gethostname(),
            TEST_LABEL: self.nodeid,
        }


# Host variables madengine hands to every container when they are set (its list, less the
# *_VISIBLE_DEVICES: they name host ids, while a container sees only its leased devices, from 0).
PASSED_THROUGH = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "NODE_RANK",
    "NNODES",
    "NPROC_PER_NODE",
    "MAD_COLLECT_METRICS",
    "GLOO_SOCKET_IFNAME",
    "MIOPEN_USER_DB_PATH",
    "PRIMUS_CONFIG_PATH",
    "PRIMUS_CLI_EXTRA",
    "TORCH_ELASTIC_RDZV_TIMEOUT",
)


@dataclass(frozen=True)
class HostFacts:
    """What the environment takes from the host and the session rather than the card."""

    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    guest_os: str = "UBUNTU"
    hip_version: str = ""  # major.minor; "" when the host has no HIP
    rocm_path: str = "/opt/rocm"  # the image's ROCM_PATH/ROCM_HOME, else /opt/rocm
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)  # the host's variables


def model_environment(spec: ModelSpec, arch: str, lease: Lease, context: RunContext, host: HostFacts) -> dict[str, str]:
    """madengine's MAD_* variables, the host variables it passes through, MAD_SECRETS*, then the
    context's docker_env_vars (which win, as in madengine)."""
    vendor = vendor_of(arch)
    launcher = launcher_of(spec.extra, context.raw, host.environ)
    environment = {
        "MAD_MODEL_NAME": spec.name,
        "MAD_SYSTEM_GPU_ARCHITECTURE": arch,
        "MAD_GPU_VENDOR": vendor or "NONE",
        "MAD_SYSTEM_NGPUS": str(lease.system_ngpus),
        "MAD_RUNTIME_NGPUS": str(lease.count),
        "MAD_SYSTEM_GPU_PRODUCT_NAME": lease.product_name,
        "MAD_HOST_GPU_IDS": lease.ids_text,
        "MAD_GUEST_OS": host.guest_os,
        "MAD_SYSTEM_HIP_VERSION": host.hip_version,
        "MAD_MULTI_NODE_RUNNER": multi_node_runner(launcher, lease.count),
        "JENKINS_BUILD_NUMBER": host.environ.get("BUILD_NUMBER", "0"),
    }
    if vendor == "AMD":
        environment["ROCM_PATH"] = host.rocm_path
    if spec.multiple_results:
        environment["MAD_OUTPUT_CSV"] = spec.multiple_results
    environment.update({name: host.environ[name] for name in PASSED_THROUGH if name in host.environ})
    environment.update({k: v for k, v in host.environ.items() if k.startswith("NCCL_")})
    environment.update(host.secrets)
    environment.update(context.docker_env_vars)
    return environment


def run_options_for(spec: ModelSpec, arch: str, isolation: str, context: RunContext) -> dict[str, Any]:
    """madengine's defaults for the arch's vendor (or Docker's, strict), the context's docker_cpus, then
    the card's `additional_docker_run_options` on top: its resource limits win over the defaults."""
    options = default_options(isolation, vendor_of(arch), host_has_fuse())
    if context.docker_cpus:
        options["cpuset_cpus"] = context.docker_cpus
    text = str(spec.extra.get("additional_docker_run_options", "") or "")
    card = parse_run_options(text, f"{spec.source}: model '{spec.name}'")
    if "shm_size" in card and "ipc_mode" not in card:
        options.pop("ipc_mode", None)  # a /dev/shm of its own: Docker ignores a size with the host's IPC
    return merge_options(options, card)


def rocm_path_of(image_env: Iterable[str]) -> str:
    """ROCM_PATH for an AMD container: the image's ROCM_PATH, else its ROCM_HOME, else /opt/rocm."""
    found = dict(entry.split("=", 1) for entry in image_env if "=" in entry)
    return found.get("ROCM_PATH") or found.get("ROCM_HOME") or "/opt/rocm"


def prepare_run(
    spec: ModelSpec, image: str, lease: Lease, environment: Mapping[str, str], who: RunIdentity, context: RunContext
) -> PreparedRun:
    """The run of `spec` in `image` with `lease`: what every executor is handed. (The card's data,
    and the tools, when there are some, are added by `with_extras`.)"""
    script = spec.script_path
    return PreparedRun(
        image=image,
        command=DRIVER_COMMAND if has_steps(context, url=spec.url) else tuple(script_command(spec, context.model_args)),
        environment=dict(environment),
        gpus=lease,
        labels=who.labels(),
        workspace=Workspace(
            run_dir=script if script.is_dir() else script.parent,
            scripts_root=spec.root / "scripts",
            extra=step_files(spec, context),
            writes_scripts=bool(context.pre_scripts or context.post_scripts),
        ),
        mounts=dict(context.docker_mounts),
        fetch=(spec.multiple_results,) if spec.multiple_results else (),
    )


def log_file_name(spec: ModelSpec, dockerfile_base: str, arch: str) -> str:
    """madengine's `<name>_<dockerfile base>` plus the arch: `dummy_dummy.ubuntu.amd.gfx942.run.log`."""
    stem = f"{spec.name.replace('/', '_')}_{dockerfile_base}.{arch}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".run.log"


def with_extras(run: PreparedRun, spec: ModelSpec, context: RunContext, extras: Extras) -> PreparedRun:
    """The run with the card's data (MAD_DATANAME, MAD_DATAHOME, a local provider's path mounted there,
    read-only unless `readwrite`) and the selected tools (their env_vars, MAD_TOOL_OUTPUT), and the
    driver that runs the steps around the model."""
    environment = dict(run.environment)
    options = dict(run.run_options)
    data = extras.data
    if data is not None:
        environment.update(MAD_DATANAME=data.name, MAD_DATAHOME=data.home)
        if data.provider == "local":
            mode = "rw" if data.readwrite else "ro"
            options = merge_options(options, {"volumes": [f"{data.path}:{data.home}:{mode}"]})
    if extras.tools:
        environment["MAD_TOOL_OUTPUT"] = TOOL_OUTPUT
        for tool in extras.tools:
            environment.update(tool.env_vars)
        environment.update(context.docker_env_vars)  # the context's still win
    if not has_steps(RunContext(), extras):  # nothing beyond what prepare_run already put in the driver
        return replace(run, environment=environment, run_options=options)
    workspace = replace(run.workspace, extra=step_files(spec, context, extras))
    return replace(run, command=DRIVER_COMMAND, environment=environment, run_options=options, workspace=workspace)


def for_cluster(run: PreparedRun, spec: ModelSpec, context: RunContext, environ: Mapping[str, str]) -> PreparedRun:
    """On a backend that spans machines: n_gpus -1 takes whole nodes, and a multi-node card gets its
    node count and the MAD_MULTI_NODE_RUNNER form each node's runner completes. A slurm_multi card
    runs its own script (see `self_managed`)."""
    nnodes = nnodes_of(spec.extra, context.raw)
    run = replace(run, whole_nodes=spec.n_gpus == -1)
    launcher = launcher_of(spec.extra, context.raw, environ)
    if launcher in ("slurm_multi", "slurm-multi"):
        return self_managed(run, spec, context, nnodes)
    if nnodes == 1:
        return run
    return replace(run, nnodes=nnodes, node_runner=multi_node_form(launcher, nnodes))


def self_managed(run: PreparedRun, spec: ModelSpec, context: RunContext, nnodes: int) -> PreparedRun:
    """madengine's `_run_self_managed`: `bash <script> <args>` in the script's folder, the card's
    env_vars then the context's exported, DOCKER_IMAGE_NAME the image to run; the allocation from the
    card's `slurm` block under the context's (its `nodes` sizes it, as in madengine)."""
    batch = {**_mapping(spec.extra.get("slurm")), **_mapping(context.raw.get("slurm"))}
    environment = {k: v for k, v in run.environment.items() if "MAD_SECRETS" not in k}
    environment.update({str(k): str(v) for k, v in _mapping(spec.extra.get("env_vars")).items()})
    environment.update({str(k): str(v) for k, v in _mapping(context.raw.get("env_vars")).items()})
    environment["DOCKER_IMAGE_NAME"] = run.image
    try:
        nodes = int(batch.get("nodes") or nnodes)
    except (TypeError, ValueError):
        nodes = nnodes
    command = tuple(script_command(spec, context.model_args))
    exclusive = bool(batch.get("exclusive", spec.n_gpus == -1))
    return replace(
        run,
        command=command,
        environment=environment,
        nnodes=max(nodes, 1),
        self_managed=True,
        batch=batch,
        whole_nodes=exclusive,
    )


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}

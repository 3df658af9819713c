"""docker SDK `containers.create` arguments as `docker create` flags, for a node that has only the
docker CLI (a SLURM compute node). The environment is not here: it goes in an env file that never
touches a disk or a command line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import MadengineError
from .run_options import volume_list

_SCALARS = {
    "network_mode": "--network",
    "ipc_mode": "--ipc",
    "user": "--user",
    "shm_size": "--shm-size",
    "mem_limit": "--memory",
    "memswap_limit": "--memory-swap",
    "cpuset_cpus": "--cpuset-cpus",
    "pids_limit": "--pids-limit",
    "working_dir": "--workdir",
    "hostname": "--hostname",
}
_LISTS = {
    "cap_add": "--cap-add",
    "cap_drop": "--cap-drop",
    "security_opt": "--security-opt",
    "group_add": "--group-add",
    "devices": "--device",
}
_SWITCHES = {"privileged": "--privileged", "init": "--init"}
_IGNORED = {"image", "command", "environment", "detach", "labels", "entrypoint"}


class CliOptionError(MadengineError):
    """A container option the docker CLI path cannot express."""


def _device_requests(value: Any) -> list[str]:
    flags = []
    for request in value or []:
        ids = request.get("DeviceIDs") or []
        flags += ["--gpus", f'"device={",".join(ids)}"' if ids else "all"]
    return flags


def cli_flags(options: Mapping[str, Any]) -> list[str]:
    """The flags for everything in `options` but image, command and environment."""
    flags: list[str] = []
    for key, value in options.items():
        if key in _IGNORED or value in (None, "", [], {}):
            continue
        if key in _SCALARS:
            flags += [_SCALARS[key], str(value)]
        elif key in _LISTS:
            for item in value:
                flags += [_LISTS[key], str(item)]
        elif key in _SWITCHES:
            flags += [_SWITCHES[key]] if value else []
        elif key == "nano_cpus":
            flags += ["--cpus", f"{int(value) / 1e9:g}"]
        elif key == "volumes":  # the list form, or the dict a container_options hook may give
            for volume in volume_list(value):
                flags += ["--volume", volume]
        elif key == "ulimits":
            for limit in value:
                flags += ["--ulimit", f"{limit['Name']}={limit['Soft']}:{limit['Hard']}"]
        elif key == "tmpfs":
            for path, opts in value.items():
                flags += ["--tmpfs", f"{path}:{opts}" if opts else path]
        elif key == "extra_hosts":
            hosts = [f"{n}:{a}" for n, a in value.items()] if isinstance(value, Mapping) else value
            for host in hosts:
                flags += ["--add-host", str(host)]
        elif key == "device_requests":
            flags += _device_requests(value)
        else:
            raise CliOptionError(f"container option {key!r} cannot be passed to a SLURM node's docker")
    labels = options.get("labels") or {}
    for name, text in labels.items():
        flags += ["--label", f"{name}={text}"]
    entrypoint = options.get("entrypoint")
    if entrypoint:
        flags += ["--entrypoint", entrypoint if isinstance(entrypoint, str) else " ".join(entrypoint)]
    return flags

"""The container a model gets: madengine's default `docker run` options, then the card's own.

A card's `additional_docker_run_options` is `docker run` flags as text; it is split like a shell
would (no shell ever sees it) and turned into docker SDK arguments. A flag we do not know is an
error naming the card and the flag, never dropped.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from docker.types import Ulimit

from ..errors import MadengineError

ISOLATIONS = ("madengine", "strict")
LISTS = ("cap_add", "cap_drop", "security_opt", "group_add", "devices", "ulimits", "extra_hosts_list")


class RunOptionsError(MadengineError):
    """An `additional_docker_run_options` we cannot apply as written."""

    perf_reason = "bad additional_docker_run_options"


def default_options(isolation: str, vendor: str | None, host_has_fuse: bool) -> dict[str, Any]:
    """madengine's options for the vendor (host network and IPC, root, video, ptrace and admin
    capabilities, no seccomp or AppArmor confinement, /dev/fuse); `strict`: Docker's defaults plus
    an 8 GB /dev/shm, for shared CI hosts."""
    if isolation == "strict":
        return {"shm_size": "8g"}
    caps = ["SYS_PTRACE", "SYS_ADMIN", *(["SYS_NICE"] if vendor == "NVIDIA" else [])]
    options: dict[str, Any] = {
        "network_mode": "host",
        "ipc_mode": "host",
        "user": "root",
        "group_add": ["video"],
        "cap_add": caps,
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    }
    if host_has_fuse:
        options["devices"] = ["/dev/fuse"]
    return options


def host_has_fuse() -> bool:
    return Path("/dev/fuse").exists()


def _volume(value: str) -> tuple[str, dict[str, str]]:
    parts = value.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"a volume must be HOST:CONTAINER[:ro|rw], got {value!r}")
    mode = parts[2] if len(parts) > 2 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"volume mode must be ro or rw, got {mode!r}")
    return parts[0], {"bind": parts[1], "mode": mode}


def _ulimit(value: str) -> Ulimit:
    name, _, limits = value.partition("=")
    soft, _, hard = limits.partition(":")
    try:
        return Ulimit(name=name, soft=int(soft), hard=int(hard or soft))
    except ValueError:
        raise ValueError(f"a ulimit must be NAME=SOFT[:HARD], got {value!r}") from None


def _env(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep:
        raise ValueError(f"an env entry must be NAME=VALUE, got {value!r}")
    return name, text


def _tmpfs(value: str) -> tuple[str, str]:
    path, _, opts = value.partition(":")
    return path, opts


def _cpus(value: str) -> int:
    return int(float(value) * 1e9)


# flag -> (SDK argument, how the value is read; None: a switch)
Reader = Callable[[str], Any]
FLAGS: dict[str, tuple[str, Reader | None]] = {
    "--shm-size": ("shm_size", str),
    "--ipc": ("ipc_mode", str),
    "--network": ("network_mode", str),
    "--net": ("network_mode", str),
    "--device": ("devices", str),
    "--env": ("environment", _env),
    "-e": ("environment", _env),
    "--volume": ("volumes", _volume),
    "-v": ("volumes", _volume),
    "--ulimit": ("ulimits", _ulimit),
    "--cap-add": ("cap_add", str),
    "--cap-drop": ("cap_drop", str),
    "--security-opt": ("security_opt", str),
    "--privileged": ("privileged", None),
    "--group-add": ("group_add", str),
    "--user": ("user", str),
    "-u": ("user", str),
    "--memory": ("mem_limit", str),
    "-m": ("mem_limit", str),
    "--memory-swap": ("memswap_limit", str),
    "--cpus": ("nano_cpus", _cpus),
    "--cpuset-cpus": ("cpuset_cpus", str),
    "--pids-limit": ("pids_limit", int),
    "--tmpfs": ("tmpfs", _tmpfs),
    "--workdir": ("working_dir", str),
    "-w": ("working_dir", str),
    "--entrypoint": ("entrypoint", str),
    "--hostname": ("hostname", str),
    "-h": ("hostname", str),
    "--add-host": ("extra_hosts_list", str),
    "--init": ("init", None),
    "--rm": ("", None),  # we always remove the container
}


def parse_run_options(text: str, where: str) -> dict[str, Any]:
    """`docker run` flags as docker SDK arguments; `where` names the card in errors."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise RunOptionsError(f"{where}: field 'additional_docker_run_options': {exc}") from None
    options: dict[str, Any] = {}
    index = 0
    while index < len(words):
        word = words[index]
        flag, sep, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if flag not in FLAGS:
            raise RunOptionsError(
                f"{where}: field 'additional_docker_run_options': unsupported flag {flag!r} (supported: "
                f"{', '.join(sorted(f for f in FLAGS if f.startswith('--')))})"
            )
        key, read = FLAGS[flag]
        index += 1
        if read is None:
            if key:
                options[key] = True
            continue
        if not sep:
            if index >= len(words):
                raise RunOptionsError(f"{where}: field 'additional_docker_run_options': {flag} needs a value")
            value, index = words[index], index + 1
        try:
            _store(options, key, read(value))
        except ValueError as exc:
            raise RunOptionsError(f"{where}: field 'additional_docker_run_options': {flag}: {exc}") from None
    if "extra_hosts_list" in options:
        options["extra_hosts"] = dict(_host(h) for h in options.pop("extra_hosts_list"))
    return options


def _host(value: str) -> tuple[str, str]:
    name, sep, address = value.partition(":")
    if not sep:
        raise RunOptionsError(f"--add-host must be NAME:ADDRESS, got {value!r}")
    return name, address


def _store(options: dict[str, Any], key: str, value: Any) -> None:
    if key in ("environment", "volumes", "tmpfs"):
        name, inner = value
        options.setdefault(key, {})[name] = inner
    elif key in LISTS:
        options.setdefault(key, []).append(value)
    else:
        options[key] = value


def merge_options(base: Mapping[str, Any], card: Mapping[str, Any]) -> dict[str, Any]:
    """The card's options over the defaults: lists add up (capabilities, devices...), mappings merge
    (environment, volumes), anything else the card sets wins (shm size, user, network, limits)."""
    merged = dict(base)
    for key, value in card.items():
        if isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = [*merged[key], *[v for v in value if v not in merged[key]]]
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged

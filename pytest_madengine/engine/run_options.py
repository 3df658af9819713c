"""The container a model gets: madengine's default `docker run` options, then the card's own.

A card's `additional_docker_run_options` is `docker run` flags as text; it is split like a shell
would (no shell ever sees it) and turned into docker SDK arguments. A flag we do not know is an
error naming the card and the flag, never dropped.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from docker.types import Ulimit

from ..errors import MadengineError

ISOLATIONS = ("madengine", "strict")
LISTS = ("cap_add", "cap_drop", "security_opt", "group_add", "devices", "ulimits", "volumes", "extra_hosts")


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


def _volume(value: str) -> str:
    """The SDK's list form, `HOST:CONTAINER:MODE`: two mounts of one host path both stay (its dict
    form, keyed by host path, would keep the last)."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"a volume must be HOST:CONTAINER[:ro|rw], got {value!r}")
    mode = parts[2] if len(parts) > 2 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"volume mode must be ro or rw, got {mode!r}")
    return f"{parts[0]}:{parts[1]}:{mode}"


def _ulimit(value: str) -> Ulimit:
    name, _, limits = value.partition("=")
    soft, _, hard = limits.partition(":")
    try:
        return Ulimit(name=name, soft=int(soft), hard=int(hard or soft))
    except ValueError:
        raise ValueError(f"a ulimit must be NAME=SOFT[:HARD], got {value!r}") from None


def _env(value: str) -> tuple[str, str | None]:
    """NAME=VALUE, or NAME alone: docker passes the host's value then (nothing when it is unset)."""
    name, sep, text = value.partition("=")
    if not name:
        raise ValueError(f"an env entry must be NAME=VALUE or NAME, got {value!r}")
    return name, text if sep else None


def _tmpfs(value: str) -> tuple[str, str]:
    path, _, opts = value.partition(":")
    return path, opts


def _cpus(value: str) -> int:
    try:
        return int(float(value) * 1e9)
    except ValueError:
        raise ValueError(f"must be a number of CPUs, got {value!r}") from None


def _count(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"must be a whole number, got {value!r}") from None


def _host(value: str) -> str:
    name, sep, address = value.partition(":")
    if not sep or not name or not address:
        raise ValueError(f"a host must be NAME:ADDRESS, got {value!r}")
    return value


def _switch(value: str | None) -> bool:
    """A switch alone is on; `--privileged=false` is off, as docker reads it."""
    if value is None or value.lower() in ("true", "t", "1"):
        return True
    if value.lower() in ("false", "f", "0"):
        return False
    raise ValueError(f"takes true or false, got {value!r}")


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
    "--pids-limit": ("pids_limit", _count),
    "--tmpfs": ("tmpfs", _tmpfs),
    "--workdir": ("working_dir", str),  # madengine's own --workdir comes after: see local.docker_options
    "-w": ("working_dir", str),
    "--entrypoint": ("entrypoint", str),
    "--hostname": ("hostname", str),
    "-h": ("hostname", str),
    "--add-host": ("extra_hosts", _host),
    "--init": ("init", None),
    "--rm": ("", None),  # we always remove the container
}


def _next_flag(words: list[str], index: int, field: str) -> tuple[str, str | None, int]:
    """The flag at `index`, its value (None for a switch given alone) and the next index. Values come
    as docker takes them: `--flag value`, `--flag=value`, `-f value`, `-fvalue` and `-f=value`."""
    word = words[index]
    attached: str | None = None
    if word.startswith("--"):
        flag, sep, value = word.partition("=")
        attached = value if sep else None
    elif len(word) > 2 and FLAGS.get(word[:2], ("", None))[1] is not None:
        flag, attached = word[:2], word[2:].removeprefix("=")
    else:
        flag = word
    if flag not in FLAGS:
        supported = ", ".join(sorted(f for f in FLAGS if f.startswith("--")))
        raise RunOptionsError(f"{field}: unsupported flag {flag!r} (supported: {supported})")
    if FLAGS[flag][1] is None or attached is not None:
        return flag, attached, index + 1
    if index + 1 >= len(words):
        raise RunOptionsError(f"{field}: {flag} needs a value")
    return flag, words[index + 1], index + 2


def parse_run_options(text: str, where: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`docker run` flags as docker SDK arguments; `where` names the card in errors. `-e NAME` takes
    `environ`'s value (the host's by default), as docker does."""
    field = f"{where}: field 'additional_docker_run_options'"
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise RunOptionsError(f"{field}: {exc}") from None
    host = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    index = 0
    while index < len(words):
        flag, value, index = _next_flag(words, index, field)
        key, read = FLAGS[flag]
        try:
            if read is None:
                switch = _switch(value)
                if key:
                    options[key] = switch
            else:
                _store(options, key, read(str(value)), host)
        except ValueError as exc:
            raise RunOptionsError(f"{field}: {flag}: {exc}") from None
    return options


def _store(options: dict[str, Any], key: str, value: Any, host: Mapping[str, str]) -> None:
    if key == "environment":
        name, text = value
        if text is None and name not in host:
            return  # docker sets nothing for `-e NAME` when the host has no NAME
        options.setdefault(key, {})[name] = host[name] if text is None else text
    elif key == "tmpfs":
        path, opts = value
        options.setdefault(key, {})[path] = opts
    elif key in LISTS:
        options.setdefault(key, []).append(value)
    else:
        options[key] = value


def volume_list(value: Any) -> list[str]:
    """SDK `volumes` in the list form, from either form (a container_options hook may give a dict)."""
    if isinstance(value, Mapping):
        return [f"{host}:{spec['bind']}:{spec.get('mode', 'rw')}" for host, spec in value.items()]
    return [str(v) for v in value or []]


def merge_options(base: Mapping[str, Any], card: Mapping[str, Any]) -> dict[str, Any]:
    """The card's options over the defaults: lists add up (capabilities, devices, volumes...), mappings
    merge (environment, tmpfs), anything else the card sets wins (shm size, user, network, limits)."""
    merged = dict(base)
    for key, value in card.items():
        if key == "volumes":
            value, merged[key] = volume_list(value), volume_list(merged.get(key))
        if isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = [*merged[key], *[v for v in value if v not in merged[key]]]
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged

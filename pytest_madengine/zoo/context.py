"""madengine's additional context (`--additional-context` / `-f`), accepted as it is."""

from __future__ import annotations

import ast
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MadengineError

KNOWN = frozenset(
    {
        "docker_env_vars",
        "docker_mounts",
        "docker_build_arg",
        "docker_gpus",
        "docker_cpus",
        "distributed",
        "tools",
        "data",
        "MAD_CONTAINER_IMAGE",
        "slurm",
        "gpu_vendor",
        "guest_os",
        "model_args",
        "pre_scripts",
        "post_scripts",
    }
)


class ContextError(MadengineError, ValueError):
    """A malformed context: the text says what is wrong."""


@dataclass(frozen=True)
class Step:
    path: str  # relative to the models root, as in madengine
    args: str = ""


@dataclass(frozen=True)
class RunContext:
    docker_env_vars: dict[str, str] = field(default_factory=dict)
    docker_mounts: dict[str, str] = field(default_factory=dict)  # container path -> host path
    docker_build_arg: dict[str, str] = field(default_factory=dict)
    docker_gpus: str | None = None
    docker_cpus: str | None = None  # a cpuset for every container
    container_image: str | None = None  # MAD_CONTAINER_IMAGE: run this image, build nothing
    gpu_vendor: str | None = None
    guest_os: str | None = None
    model_args: str | None = None
    pre_scripts: tuple[Step, ...] = ()
    post_scripts: tuple[Step, ...] = ()
    unknown: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # every key, as given


def parse_text(text: str, source: str) -> dict[str, Any]:
    """JSON first, then a Python dict literal, as madengine's CLI does."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise ContextError(f"{source} is neither JSON nor a Python dict literal: {exc}") from None
    if not isinstance(value, dict):
        raise ContextError(f"{source} must be a JSON object / dict, got {type(value).__name__}")
    return value


def _str_map(data: dict[str, Any], key: str) -> dict[str, str]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ContextError(f"context key '{key}' must be an object of strings")
    return {k: str(v) for k, v in value.items()}


def _steps(data: dict[str, Any], key: str) -> tuple[Step, ...]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ContextError(f'context key \'{key}\' must be a list of {{"path": ..., "args": ...}}')
    steps = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ContextError(f"context key '{key}' entry #{index} needs a \"path\" string")
        args = str(entry.get("args", "") or "")
        try:
            shlex.split(args)
        except ValueError as exc:
            raise ContextError(f"context key '{key}' entry #{index}: args cannot be split: {exc}") from None
        steps.append(Step(entry["path"], args))
    return tuple(steps)


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    if key not in data or data[key] is None:
        return None
    if not isinstance(data[key], (str, int)):
        raise ContextError(f"context key '{key}' must be a string")
    return str(data[key])


def build_context(option: str | None, file: Path | None) -> RunContext:
    """The file's keys, then the option's on top, key by key."""
    merged: dict[str, Any] = {}
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ContextError(f"cannot read context file {file}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ContextError(f"context file {file} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ContextError(f"context file {file} must hold a JSON object")
        merged.update(data)
    if option:
        merged.update(parse_text(option, "--madengine-context"))
    model_args = _optional_str(merged, "model_args")
    try:
        shlex.split(model_args or "")
    except ValueError as exc:
        raise ContextError(f"context key 'model_args' cannot be split like a shell would: {exc}") from None
    return RunContext(
        docker_env_vars=_str_map(merged, "docker_env_vars"),
        docker_mounts=_str_map(merged, "docker_mounts"),
        docker_build_arg=_str_map(merged, "docker_build_arg"),
        docker_gpus=_optional_str(merged, "docker_gpus"),
        docker_cpus=_optional_str(merged, "docker_cpus"),
        container_image=_optional_str(merged, "MAD_CONTAINER_IMAGE"),
        gpu_vendor=(_optional_str(merged, "gpu_vendor") or "").upper() or None,
        guest_os=(_optional_str(merged, "guest_os") or "").upper() or None,
        model_args=model_args,
        pre_scripts=_steps(merged, "pre_scripts"),
        post_scripts=_steps(merged, "post_scripts"),
        unknown=tuple(sorted(k for k in merged if k not in KNOWN)),
        raw=merged,
    )

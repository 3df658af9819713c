"""Tools and profilers around a model: madengine's tools.json format, ours shipped with the plugin.

A tool is `{pre_scripts, cmd, env_vars, post_scripts}`. Its `cmd` goes in front of the model's
command (the last tool selected is outermost, as madengine's encapsulate_script); its scripts run
around the model. What a tool writes to $MAD_TOOL_OUTPUT comes back to the item's log folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import MadengineError

SHIPPED = Path(__file__).resolve().parent.parent / "tools" / "tools.json"
OUTPUT_DIR = "madengine_output"  # below the run directory: $MAD_TOOL_OUTPUT


class ToolsError(MadengineError):
    """A tools file we cannot read, or a tool nobody defines."""


@dataclass(frozen=True)
class ToolStep:
    path: Path  # resolved on this host
    args: str = ""


@dataclass(frozen=True)
class Tool:
    name: str
    cmd: str = ""
    env_vars: Mapping[str, str] = field(default_factory=dict)
    pre_scripts: tuple[ToolStep, ...] = ()
    post_scripts: tuple[ToolStep, ...] = ()


def _steps(entries: object, base: Path, where: str) -> tuple[ToolStep, ...]:
    if not isinstance(entries, list):
        raise ToolsError(f'{where} must be a list of {{"path": ..., "args": ...}}')
    steps = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ToolsError(f'{where}: every entry needs a "path"')
        steps.append(ToolStep(base / entry["path"], str(entry.get("args", "") or "")))
    return tuple(steps)


def _tool(name: str, data: object, base: Path, source: Path) -> Tool:
    where = f"{source}: tool '{name}'"
    if not isinstance(data, dict):
        raise ToolsError(f"{where} must be an object")
    env = data.get("env_vars", {}) or {}
    if not isinstance(env, dict):
        raise ToolsError(f"{where}: env_vars must be an object")
    return Tool(
        name=name,
        cmd=str(data.get("cmd", "") or ""),
        env_vars={str(k): str(v) for k, v in env.items()},
        pre_scripts=_steps(data.get("pre_scripts", []), base, f"{where}: pre_scripts"),
        post_scripts=_steps(data.get("post_scripts", []), base, f"{where}: post_scripts"),
    )


def load_catalog(files: Iterable[Path], zoo_root: Path | None = None) -> dict[str, Tool]:
    """Ours, then each file over it. A user file's script paths are relative to the zoo's root (as
    MAD's tools.json) when given, else to the file."""
    catalog: dict[str, Tool] = {}
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ToolsError(f"cannot read tools file {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ToolsError(f"tools file {path} is not valid JSON: {exc}") from None
        tools = data.get("tools") if isinstance(data, dict) else None
        if not isinstance(tools, dict):
            raise ToolsError(f'tools file {path} must hold {{"tools": {{<name>: {{...}}}}}}')
        base = path.parent if path == SHIPPED or zoo_root is None else zoo_root
        catalog.update({name: _tool(name, entry, base, path) for name, entry in tools.items()})
    return catalog


def select_tools(names: Sequence[str], context_tools: object, catalog: Mapping[str, Tool]) -> tuple[Tool, ...]:
    """The tools asked for: --madengine-tools names, then the context's `tools` entries (whose own
    `cmd` and `env_vars` win over the file's, as in madengine). Unknown names are an error listing
    the known ones."""
    wanted: list[tuple[str, Mapping[str, Any]]] = [(name, {}) for name in names]
    if isinstance(context_tools, list):
        for entry in context_tools:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ToolsError("context key 'tools' must be a list of {\"name\": ...}")
            wanted.append((entry["name"], entry))
    elif context_tools not in (None, []):
        raise ToolsError("context key 'tools' must be a list of {\"name\": ...}")
    unknown = [name for name, _ in wanted if name not in catalog]
    if unknown:
        raise ToolsError(f"unknown tool {', '.join(unknown)}; known: {', '.join(sorted(catalog))}")
    chosen = []
    for name, entry in wanted:
        tool = catalog[name]
        if "cmd" in entry:
            tool = replace(tool, cmd=str(entry["cmd"] or ""))
        if isinstance(entry.get("env_vars"), dict):
            tool = replace(tool, env_vars={**tool.env_vars, **{str(k): str(v) for k, v in entry["env_vars"].items()}})
        chosen.append(tool)
    return tuple(chosen)


def wrap_command(command: str, tools: Sequence[Tool]) -> str:
    """The model's command behind the tools' `cmd`s, the last tool outermost; a repeated cmd once."""
    prefixes: list[str] = []
    for tool in reversed(tools):
        if tool.cmd and tool.cmd not in prefixes:
            prefixes.append(tool.cmd)
    return " ".join([*prefixes, command])

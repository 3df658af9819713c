"""The driver script that runs a model's steps in order: tool and context pre scripts, the data, the
model behind its tools' commands, then the post scripts. Every word the user wrote is shell-quoted,
so nothing is parsed twice."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from ..zoo.context import ContextError, RunContext, Step
from ..zoo.data import CUSTOM_TIMEOUT_S, DataChoice
from ..zoo.models import ModelSpec
from ..zoo.tools import OUTPUT_DIR, Tool, ToolStep, wrap_command
from .workspace import RUN_DIR

DRIVER = "madengine_steps.sh"
STEPS_DIR = "madengine_steps"
DRIVER_COMMAND = ("sh", DRIVER)
DATA_LINE = "madengine-data:"  # the driver's line with the data's size and preparation time
GIT_LINE = "madengine-git:"  # the driver's line with the cloned commit
# $MAD_TOOL_OUTPUT and where the tools' output is copied out from: absolute, as a url card runs in its clone
TOOL_OUTPUT = f"{RUN_DIR}/{OUTPUT_DIR}"


@dataclass(frozen=True)
class Extras:
    """What a run adds around the model beyond the context's pre/post scripts."""

    data: DataChoice | None = None
    tools: tuple[Tool, ...] = ()


def has_steps(context: RunContext, extras: Extras = Extras(), url: str = "") -> bool:
    data = extras.data is not None and extras.data.provider != "none"
    return bool(context.pre_scripts or context.post_scripts or data or extras.tools or url)


# Answers git's credential questions from the environment (set from the card's `cred`), so the
# secret is in no command line and no log.
CREDENTIAL_HELPER = '!f() { echo "username=$MAD_GIT_USERNAME"; echo "password=$MAD_GIT_PASSWORD"; }; f'


def clone_lines(url: str) -> list[str]:
    """madengine's `url`: clone into /myworkspace/<basename(url)>, report the commit, bring the
    submodules, copy the card's own files over the clone (its `cp -vLR`), and run from there."""
    folder = shlex.quote(f"/myworkspace/{url.rstrip('/').rsplit('/', 1)[-1] or 'repo'}")
    helper = shlex.quote(f"credential.helper={CREDENTIAL_HELPER}")
    return [
        "command -v git >/dev/null 2>&1 || "
        '{ echo "pytest-madengine: the card has a url, and git is not in the image" >&2; exit 127; }',
        "src=$(pwd)",
        f'if [ -n "${{MAD_GIT_PASSWORD:-}}" ]; then set -- -c {helper}; else set --; fi',
        f'git "$@" clone --quiet -- {shlex.quote(url)} {folder} || exit $?',
        f"cd {folder} || exit $?",
        f'echo "{GIT_LINE} $(git rev-parse HEAD)"',
        "if [ -f .gitmodules ]; then git submodule update --init --recursive --quiet || exit $?; fi",
        'cp -RL "$src"/. . || exit $?',
    ]


def script_command(spec: ModelSpec, args: str | None = None) -> list[str]:
    """madengine's `bash|python3 <script> <args>`, split like a shell would but run without one."""
    script = spec.script_path
    argv = shlex.split(spec.args if args is None else args)
    if script.is_dir():
        return ["bash", "run.sh", *argv]
    interpreter = "python3" if script.suffix == ".py" else "bash"
    return [interpreter, script.name, *argv]


def data_lines(data: DataChoice, files: dict[str, Path | bytes], root: Path) -> list[str]:
    """Make MAD_DATAHOME, run a custom provider's script there (madengine's limit), and report the
    size and the time taken on one line the run's log carries."""
    lines = ['mkdir -p "$MAD_DATAHOME"', "here=$(pwd)", "start=$(date +%s)"]
    if data.provider == "custom":
        source = root / data.path
        name = f"{STEPS_DIR}/data_{source.name}"
        files[name] = source
        command = f'timeout {CUSTOM_TIMEOUT_S} bash "$script" {shlex.join(shlex.split(data.args))}'.rstrip()
        banner = shlex.quote(f"=== data {data.name} (custom)")
        lines += [f'script="$here"/{shlex.quote(name)}', f'echo {banner}; (cd "$MAD_DATAHOME" && {command}) || exit $?']
    lines.append(
        f'echo "{DATA_LINE} duration=$(( $(date +%s) - start )) '
        'size=$(timeout 60 du -sh "$MAD_DATAHOME" 2>/dev/null | cut -f1)"'
    )
    return lines


def step_files(spec: ModelSpec, context: RunContext, extras: Extras = Extras()) -> dict[str, Path | bytes]:
    """The steps' scripts copied into the run directory (as madengine's `cp -vLR`), and the driver.
    Order as madengine's: tool pre scripts (the last tool's first), the context's, the data, the
    model behind the tools' commands, the context's post scripts, then each tool's in order."""
    if not has_steps(context, extras, spec.url):
        return {}
    files: dict[str, Path | bytes] = {}
    lines = ["#!/bin/sh", "# written by pytest-madengine: clone, pre scripts, data, the model, post scripts"]
    if spec.url:
        lines.extend(clone_lines(spec.url))

    def step_line(kind: str, source: Path, args: str, what: str) -> str:
        if not source.exists():
            raise ContextError(f"{what} path {source} does not exist")
        name = f"{STEPS_DIR}/{kind}{len(files)}_{source.name}"  # own folder: no clash with the model's files
        files[name] = source
        words = ["bash", name, *shlex.split(args)]
        return f"echo {shlex.quote(f'=== {kind} script {source.name}')}; {shlex.join(words)}"

    def context_line(kind: str, step: Step) -> str:
        return step_line(kind, spec.root / step.path, step.args, f"{kind}_scripts")

    def tool_line(kind: str, tool: Tool, step: ToolStep) -> str:
        return step_line(kind, step.path, step.args, f"tool {tool.name}'s {kind}_scripts")

    if extras.tools:
        lines.append(f"mkdir -p {shlex.quote(TOOL_OUTPUT)}")
    pre = [tool_line("pre", t, s) for t in reversed(extras.tools) for s in t.pre_scripts]
    pre += [context_line("pre", step) for step in context.pre_scripts]
    lines.extend(line + " || exit $?" for line in pre)
    if extras.data is not None and extras.data.provider != "none":
        lines.extend(data_lines(extras.data, files, spec.root))
    lines.append(wrap_command(shlex.join(script_command(spec, context.model_args)), extras.tools))
    lines.append("status=$?")
    lines.extend(context_line("post", step) for step in context.post_scripts)
    lines.extend(tool_line("post", t, s) for t in extras.tools for s in t.post_scripts)
    lines.append('exit "$status"')
    files[DRIVER] = ("\n".join(lines) + "\n").encode()
    return files

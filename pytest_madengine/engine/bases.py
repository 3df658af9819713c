"""The images a Dockerfile builds FROM, as the engine will resolve them (build args substituted,
earlier stages left out): their local identity is part of an image's cache key, so a rebuilt or
re-tagged base rebuilds the images on it, and only those."""

from __future__ import annotations

import re
from collections.abc import Mapping

_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", re.IGNORECASE)
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def _substitute(text: str, values: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        return values.get(name) or (match.group(2) or "")

    return _VAR.sub(one, text)


def _logical_lines(text: str) -> list[str]:
    """Dockerfile lines with `\\` continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if not pending and raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def from_images(dockerfile: str, build_args: Mapping[str, str]) -> list[str]:
    """Each distinct base image reference, in order; `scratch` and earlier stages are not images."""
    values: dict[str, str] = {}
    stages: set[str] = set()
    found: list[str] = []
    for line in _logical_lines(dockerfile):
        arg = _ARG.match(line)
        if arg and not found:  # only the ARGs before the first FROM apply to FROM lines
            values[arg.group(1)] = build_args.get(arg.group(1), arg.group(2) or "")
            continue
        match = _FROM.match(line)
        if match is None:
            continue
        reference = _substitute(match.group(1), {**values, **build_args})
        if reference.lower() != "scratch" and reference not in stages and reference not in found:
            found.append(reference)
        if match.group(2):
            stages.add(match.group(2))
    return found

"""Resolve a models.json `dockerfile` prefix to the Dockerfiles a given arch should use."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .models import ModelsFileError, ModelSpec

HEADER_LINES = 5
_HEADER = "# CONTEXT "
# MAD's own naming: `<prefix>.Dockerfile` and `<prefix>.<os>.<vendor>.Dockerfile`.
EXACT = re.compile(r"(?:(?P<os>[A-Za-z0-9_-]+)\.(?P<vendor>amd|nvidia))?", re.IGNORECASE)


@dataclass(frozen=True)
class Dockerfile:
    """One candidate Dockerfile with its parsed `# CONTEXT` header."""

    path: Path
    variant: str  # the file name after the prefix, e.g. "ubuntu.amd"
    context: Mapping[str, object] | None = field(default_factory=dict)  # None: no header, or one that does not parse
    exact: bool = False  # named `<prefix>.Dockerfile` or `<prefix>.<os>.<vendor>.Dockerfile`
    header_problem: str = ""  # why `context` is None

    @property
    def base_name(self) -> str:
        """`dummy.ubuntu.amd` for `docker/dummy.ubuntu.amd.Dockerfile`."""
        name = self.path.name
        return name[: -len(".Dockerfile")] if name.endswith(".Dockerfile") else name

    def matches(self, ctx: Mapping[str, str]) -> bool:
        """madengine's rule: every header key present in ctx must agree (case-insensitive here). An
        exact name's `<os>.<vendor>` also filters on the keys the header does not give (so an NVIDIA
        arch never gets `*.ubuntu.amd.Dockerfile`); a file without a usable header matches by its exact
        name, or not at all."""
        if self.context is None and not self.exact:
            return False
        header = self.context or {}
        named = {key: value for key, value in self._name_context().items() if key not in header}
        return all(
            key not in ctx or str(value).upper() == str(ctx[key]).upper()
            for key, value in (*header.items(), *named.items())
        )

    def _name_context(self) -> dict[str, str]:
        """`{guest_os, gpu_vendor}` from an exact `<os>.<vendor>` name; none for `<prefix>.Dockerfile`."""
        found = EXACT.fullmatch(self.variant) if self.exact else None
        if found is None or not found.group("vendor"):
            return {}
        return {"guest_os": found.group("os"), "gpu_vendor": found.group("vendor")}

    def default_base_docker(self) -> str:
        """The `ARG BASE_DOCKER=` default, which perf.csv reports when no build arg overrides it."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        match = re.search(r"^\s*ARG\s+BASE_DOCKER=(\S+)", text, flags=re.MULTILINE)
        return match.group(1).strip("\"'") if match else ""


def read_context_header(path: Path) -> dict[str, object]:
    """Parse the `# CONTEXT {...}` dict literal from the first five lines, or {} if absent."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = [handle.readline() for _ in range(HEADER_LINES)]
    except OSError as exc:
        raise ModelsFileError(f"{path}: cannot read Dockerfile: {exc}") from None
    for line in head:
        if _HEADER in line:
            literal = line.split(_HEADER, 1)[1].strip()
            try:
                value = ast.literal_eval(literal)
            except (ValueError, SyntaxError) as exc:
                raise ModelsFileError(f"{path}: '# CONTEXT' header is not a Python dict literal: {exc}") from None
            if not isinstance(value, dict):
                raise ModelsFileError(f"{path}: '# CONTEXT' header must be a dict, got {type(value).__name__}")
            return {str(k): v for k, v in value.items()}
    return {}


def candidates(spec: ModelSpec) -> list[Dockerfile]:
    """Every `<prefix>.*` file, as madengine's `ls <dockerfile>.*`; an empty match is an error."""
    return _for_model(spec, _scan(spec.root / spec.dockerfile))


class DockerfileCache:
    """`candidates` for the models of one models.json: each prefix's directory is listed, and its
    headers parsed, once, however many models share it (big zoos share a handful of prefixes)."""

    def __init__(self) -> None:
        self._scans: dict[tuple[Path, str], list[Dockerfile] | ModelsFileError] = {}

    def candidates(self, spec: ModelSpec) -> list[Dockerfile]:
        key = (spec.root, spec.dockerfile)
        scan = self._scans.get(key)
        if scan is None:
            scan = self._scans[key] = _scan(spec.root / spec.dockerfile)
        return _for_model(spec, scan)


def _scan(prefix: Path) -> list[Dockerfile] | ModelsFileError:
    """The prefix's Dockerfiles in name order (`ls <prefix>.*`, and `<prefix>.Dockerfile`); a header
    that is missing or does not parse leaves the file's context None, with the reason."""
    directory, stem = prefix.parent, prefix.name
    found = sorted(p for p in directory.glob(f"{stem}.*") if p.is_file()) if directory.is_dir() else []
    result = []
    for path in found:
        variant = path.name[len(stem) + 1 :]
        named = variant.endswith(".Dockerfile") or variant == "Dockerfile"
        variant = variant[: -len(".Dockerfile")] if variant.endswith(".Dockerfile") else variant
        variant = "" if variant == "Dockerfile" else variant
        exact = named and EXACT.fullmatch(variant) is not None
        try:
            header: dict[str, object] | None = read_context_header(path) or None
            problem = "" if header else "no '# CONTEXT' header in its first 5 lines"
        except ModelsFileError as exc:
            header, problem = None, str(exc)
        result.append(Dockerfile(path, variant or path.name, header, exact, problem))
    return result


def _for_model(spec: ModelSpec, scan: list[Dockerfile] | ModelsFileError) -> list[Dockerfile]:
    """The scan as this model's candidates, or its error naming the model."""
    if isinstance(scan, ModelsFileError):
        raise ModelsFileError(f"model '{spec.name}': field 'dockerfile': {scan}")
    if not scan:
        raise ModelsFileError(
            f"{spec.source}: model '{spec.name}': field 'dockerfile' prefix '{spec.dockerfile}' "
            f"matches no file ({spec.root / spec.dockerfile}.*)"
        )
    return list(scan)


def select(found: list[Dockerfile], ctx: Mapping[str, str]) -> list[Dockerfile]:
    """MAD's rule: when files are named exactly for the prefix, only they are candidates (others
    starting with it belong to other cards); else every `<prefix>.*` with a matching header."""
    exact = [d for d in found if d.exact]
    return [d for d in (exact or found) if d.matches(ctx)]


def left_out(found: list[Dockerfile]) -> list[Dockerfile]:
    """Files that no arch can get because their header is missing or does not parse (those named
    exactly for the prefix are chosen by their name instead): each deserves a warning."""
    exact = [d for d in found if d.exact]
    return [] if exact else [d for d in found if d.context is None]

"""What goes into a model's `docker build`: its build args, from every source in madengine's order."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..zoo.dockerfiles import Dockerfile
from ..zoo.models import ModelsFileError, ModelSpec
from .images import BuildRequest, build_args_for, context_dir_for


@dataclass(frozen=True)
class BuildArgSources:
    """The session's sources of build args; the model's own (`cred`) and conftest hooks come per item."""

    context_args: Mapping[str, str] = field(default_factory=dict)  # the context's docker_build_arg
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)  # MAD_SECRETS* host variables
    credential_file: Path | None = None
    cli_args: Mapping[str, str] = field(default_factory=dict)  # --madengine-build-arg


def build_request(
    spec: ModelSpec,
    arch: str,
    dockerfile: Dockerfile,
    sources: BuildArgSources,
    hook_args: Iterable[Mapping[str, Any] | None] = (),
) -> BuildRequest:
    """Build args, later ones winning: the arch, the context's docker_build_arg, MAD_SECRETS* host
    variables, the model's `cred`, conftest hooks, then --madengine-build-arg."""
    args = build_args_for(arch, sources.context_args)
    args.update(sources.secrets)
    cred = str(spec.extra.get("cred", "") or "")
    if cred:
        args.update(cred_build_args(spec, cred, sources.credential_file))
    for extra in hook_args:
        args.update({str(k): str(v) for k, v in (extra or {}).items()})
    args.update(sources.cli_args)
    return BuildRequest(
        dockerfile=dockerfile,
        context_dir=context_dir_for(spec.root, spec.dockercontext, dockerfile.path),
        arch=arch,
        build_args=args,
    )


GIT_USER_ENV, GIT_PASSWORD_ENV = "MAD_GIT_USERNAME", "MAD_GIT_PASSWORD"


def clone_credentials(spec: ModelSpec, credential_file: Path | None) -> dict[str, str]:
    """A url card's `cred` as the environment the driver's git credential helper reads (the secret
    is never on a command line or in a log): username, and password or token."""
    cred = str(spec.extra.get("cred", "") or "")
    if not spec.url or not cred:
        return {}
    entry = _credential_entry(spec, cred, credential_file)
    secret = str(entry.get("password", entry.get("token", "")))
    return {GIT_USER_ENV: str(entry.get("username", "")), GIT_PASSWORD_ENV: secret}


def check_cred(spec: ModelSpec, credential_file: Path) -> None:
    """At collection: a `cred` that credential.json lacks makes a broken card, found before any build
    (madengine raises at its build)."""
    cred = str(spec.extra.get("cred", "") or "")
    if cred:
        _credential_entry(spec, cred, credential_file)


def cred_build_args(spec: ModelSpec, cred: str, credential_file: Path | None) -> dict[str, str]:
    """madengine's `cred`: each key of credential.json's entry becomes build arg `<CRED>_<KEY>`."""
    entry = _credential_entry(spec, cred, credential_file)
    return {f"{cred}_{key.upper()}": str(value) for key, value in entry.items()}


def _credential_entry(spec: ModelSpec, cred: str, credential_file: Path | None) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    if credential_file is not None and credential_file.is_file():
        try:
            entries = json.loads(credential_file.read_text())
        except ValueError:
            where = f"{spec.source}: model '{spec.name}'"
            raise ModelsFileError(
                f"{where}: field 'cred' names {cred!r}, but {credential_file} is not valid JSON"
            ) from None
    entry = entries.get(cred) if isinstance(entries, dict) else None
    if not isinstance(entry, dict):
        raise ModelsFileError(
            f"{spec.source}: model '{spec.name}': field 'cred' names {cred!r}, which {credential_file} does not hold"
        )
    return entry

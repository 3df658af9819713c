"""Push built images to a registry and pull them back, with credentials that never reach output.

Credentials come from the environment (`MAD_DOCKERHUB_USER`/`MAD_DOCKERHUB_PASSWORD`, or a pair
named after the registry host such as `MAD_REGISTRY_127_0_0_1_5000_USER`/`..._PASSWORD`), else from
madengine's `credential.json` (an entry keyed by the registry host, or `dockerhub`, with
`username` and `password`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from ..errors import MadengineError


class RegistryError(MadengineError):
    """A push, pull or login failed; the text never holds the password."""


@dataclass(frozen=True)
class Registry:
    host: str  # host[:port], or "docker.io"
    namespace: str

    @classmethod
    def parse(cls, text: str) -> Registry:
        """`HOST[:PORT]/NAMESPACE`; a first part without '.' or ':' is a Docker Hub namespace."""
        text = text.strip().rstrip("/")
        first, _, rest = text.partition("/")
        if not rest or not first:
            raise ValueError(f"expected HOST[:PORT]/NAMESPACE, got {text!r}")
        if "." not in first and ":" not in first and first != "localhost":
            return cls("docker.io", text)
        return cls(first, rest)

    def reference(self, local_tag: str) -> str:
        """`madengine/dummy.ubuntu.amd:gfx942-abc` → `<host>/<namespace>/dummy.ubuntu.amd:gfx942-abc`."""
        repository, _, tag = local_tag.rpartition(":")
        name = repository.rsplit("/", 1)[-1]
        prefix = self.namespace if self.host == "docker.io" else f"{self.host}/{self.namespace}"
        return f"{prefix}/{name}:{tag}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def registry_host(reference: str) -> str:
    """The registry of an image reference: `ns/img:tag` is on Docker Hub, `host:5000/ns/img` is not."""
    first, sep, _ = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _env_key(host: str) -> str:
    return "MAD_REGISTRY_" + re.sub(r"[^A-Za-z0-9]", "_", host).upper()


def find_credentials(
    host: str, environ: Mapping[str, str] | None = None, credential_file: Path | None = None
) -> Credentials | None:
    env = os.environ if environ is None else environ
    specific = _env_key(host)
    for user_key, password_key in (
        (f"{specific}_USER", f"{specific}_PASSWORD"),
        ("MAD_DOCKERHUB_USER", "MAD_DOCKERHUB_PASSWORD"),
    ):
        if env.get(user_key) and env.get(password_key):
            return Credentials(env[user_key], env[password_key])
    if credential_file is not None and credential_file.is_file():
        try:
            data = json.loads(credential_file.read_text())
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{credential_file}: invalid JSON: {exc.msg}") from None
        for key in (host, "dockerhub" if host == "docker.io" else host):
            entry = data.get(key) if isinstance(data, dict) else None
            if isinstance(entry, dict) and entry.get("username") and entry.get("password"):
                return Credentials(str(entry["username"]), str(entry["password"]))
    return None


def _scrub(text: str, credentials: Credentials | None) -> str:
    if credentials and credentials.password:
        text = text.replace(credentials.password, "***")
    return text


def login(client: docker.DockerClient, registry: Registry, credentials: Credentials | None) -> None:
    if credentials is None:
        return
    try:
        client.login(
            username=credentials.username,
            password=credentials.password,
            registry=registry.host if registry.host != "docker.io" else None,
            reauth=True,
        )
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        reason = exc.explanation if isinstance(exc, docker.errors.APIError) and exc.explanation else str(exc)
        raise RegistryError(
            f"login to {registry.host} as {credentials.username} failed: {_scrub(str(reason), credentials)}"
        ) from None


def push(client: docker.DockerClient, local_tag: str, registry: Registry, credentials: Credentials | None) -> str:
    """Tag and push; return the registry reference."""
    reference = registry.reference(local_tag)
    repository, _, tag = reference.rpartition(":")
    auth = credentials.auth_config() if credentials else None
    try:
        client.images.get(local_tag).tag(repository, tag)
        for chunk in client.images.push(repository, tag, auth_config=auth, stream=True, decode=True):
            if isinstance(chunk, dict) and chunk.get("error"):
                raise RegistryError(f"push of {reference} failed: {_scrub(str(chunk['error']), credentials)}")
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise RegistryError(f"push of {reference} failed: {_scrub(str(exc), credentials)}") from None
    return reference


def pull(client: docker.DockerClient, reference: str, local_tag: str, credentials: Credentials | None) -> None:
    """Pull `reference` and tag it as `local_tag`."""
    repository, _, tag = reference.rpartition(":")
    auth = credentials.auth_config() if credentials else None
    try:
        image = client.images.pull(repository, tag=tag, auth_config=auth)
        local_repository, _, local_version = local_tag.rpartition(":")
        image.tag(local_repository, local_version)
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise RegistryError(f"pull of {reference} failed: {_scrub(str(exc), credentials)}") from None

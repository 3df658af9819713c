"""madengine's build_manifest.json: written after a build-only session, read to run elsewhere.

`built_images` is keyed by image as in madengine; `built_models` is keyed by item name
(`dummy[gfx942]`), since one of our images serves every model that shares its Dockerfile.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import MadengineError


class ManifestError(MadengineError):
    """An unreadable manifest, or a model it does not hold."""

    perf_reason = "image not in manifest"


@dataclass(frozen=True)
class BuildRecord:
    item: str  # `dummy[gfx942]`
    model: str
    docker_image: str
    dockerfile: str
    base_docker: str
    docker_sha: str
    build_duration: float
    gpu_architecture: str
    registry_image: str = ""


def write_manifest(path: Path, records: Mapping[str, BuildRecord], models: Mapping[str, Mapping[str, Any]]) -> None:
    """Atomically rewrite the whole manifest (called after each new record: a crash keeps the rest)."""
    built_images: dict[str, Any] = {}
    for record in records.values():
        entry = built_images.setdefault(record.docker_image, {**asdict(record), "models": []})
        entry["models"].append(record.model)
    built_models = {name: {**models.get(name, {}), **asdict(record)} for name, record in records.items()}
    data = {"built_images": built_images, "built_models": built_models}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def load_manifest(path: Path) -> dict[str, BuildRecord]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ManifestError(f"manifest {path} is not valid JSON: {exc}") from None
    models = data.get("built_models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ManifestError(f"manifest {path} has no built_models map")
    fields = BuildRecord.__dataclass_fields__
    records = {}
    for name, entry in models.items():
        if not isinstance(entry, dict) or "docker_image" not in entry:
            raise ManifestError(f"manifest {path}: entry {name!r} has no docker_image")
        values = {k: entry.get(k, "") for k in fields}
        values["item"] = name
        values["build_duration"] = float(values["build_duration"] or 0)
        records[name] = BuildRecord(**values)
    return records

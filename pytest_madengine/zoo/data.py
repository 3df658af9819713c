"""A card's `data`: which provider of data.json (or the context's `data`) supplies it, and where.

Providers are tried in madengine's order (custom, local, minio, nas, aws); the first usable one
wins. `local` mounts a host path at MAD_DATAHOME; `custom` runs a script of the zoo in the container
before the model, in MAD_DATAHOME. A name no provider can supply runs the model anyway, as madengine
does. Remote kinds (nas, minio, aws) are not supported yet: a card that needs one is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MadengineError
from .models import ModelSpec

ORDER = ("custom", "local", "minio", "nas", "aws")
SUPPORTED = ("custom", "local")
DEFAULT_HOME = "/data_dlm_0"  # madengine's /data_dlm plus its first provider's counter
CUSTOM_TIMEOUT_S = 1200  # madengine's limit for a custom provider's script


class DataError(MadengineError):
    """A data.json we cannot read, or a card whose data only an unsupported provider has."""

    perf_reason = "data provider"


@dataclass(frozen=True)
class DataChoice:
    name: str
    provider: str  # "custom", "local", or "none" when nothing can supply it
    home: str = DEFAULT_HOME  # MAD_DATAHOME in the container
    path: str = ""  # local: the host path; custom: the script, relative to the zoo's root
    args: str = ""
    readwrite: bool = False


def load_table(root: Path, context: Mapping[str, Any]) -> dict[str, Any]:
    """data.json beside the root models.json, with the context's `data` over it, name by name."""
    table: dict[str, Any] = {}
    path = root / "data.json"
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise DataError(f"{path} must hold a JSON object of data names")
        table.update(loaded)
    override = context.get("data")
    if isinstance(override, dict):
        table.update(override)
    return table


def choose(spec: ModelSpec, table: Mapping[str, Any]) -> DataChoice | None:
    """The card's data and its provider; None when the card names no data."""
    name = str(spec.extra.get("data", "") or "").strip()
    if not name:
        return None
    providers = table.get(name)
    if not isinstance(providers, dict):
        return DataChoice(name, "none")
    for kind in ORDER:
        config = providers.get(kind)
        if not isinstance(config, dict) or not config:
            continue
        if kind not in SUPPORTED:
            raise DataError(
                f"{spec.source}: model '{spec.name}': field 'data': {name!r} needs the {kind} provider, "
                f"which pytest-madengine does not support yet (supported: {', '.join(SUPPORTED)})"
            )
        found = _usable(kind, config, spec.root, name)
        if found is not None:
            return found
    return DataChoice(name, "none")


def _usable(kind: str, config: Mapping[str, Any], root: Path, name: str) -> DataChoice | None:
    path = str(config.get("path", "") or "")
    home = str(config.get("home", "") or DEFAULT_HOME)
    if not path:
        return None
    where = Path(path) if Path(path).is_absolute() else root / path
    if not where.exists():
        return None
    readwrite = str(config.get("readwrite", "")).lower() == "true"
    if kind == "local":
        return DataChoice(name, "local", home, str(where.resolve()), readwrite=readwrite)
    return DataChoice(name, "custom", home, path, str(config.get("args", "") or ""), readwrite)

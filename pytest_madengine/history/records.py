"""What the history holds, and how a value or a URL is read, without the database libraries (a
session that keeps no history never imports them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import MadengineError

DEFAULT_PATH = Path(".madengine") / "history.db"


def default_url(base: Path) -> str:
    return f"sqlite:///{(base / DEFAULT_PATH).resolve()}"


def number(text: object) -> float | None:
    try:
        return float(str(text))
    except ValueError:
        return None


class StorageError(MadengineError):
    """A storage URL that cannot be opened or migrated."""


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    started: datetime | None = None
    ended: datetime | None = None
    git_commit: str = ""
    git_dirty: bool | None = None
    host: str = ""
    gpu_product: str = ""
    driver: str = ""
    runtime_version: str = ""
    plugin_version: str = ""
    pytest_args: str = ""
    source: str = "session"


@dataclass(frozen=True)
class StoredResult:
    run_id: str
    model: str
    arch: str
    performance: float | None
    metric: str
    status: str
    row: Mapping[str, Any] = field(default_factory=dict)
    gpu_product: str = ""
    image_digest: str = ""

    @classmethod
    def from_row(
        cls, run_id: str, row: Mapping[str, str], gpu_product: str = "", image_digest: str = ""
    ) -> StoredResult:
        """A perf.csv row (ours or madengine's) as a stored result of `run_id`."""
        return cls(
            run_id=run_id,
            model=row.get("model", ""),
            arch=row.get("gpu_architecture", ""),
            performance=number(row.get("performance", "")),
            metric=row.get("metric", ""),
            status=row.get("status", ""),
            row=dict(row),
            gpu_product=gpu_product,
            image_digest=image_digest,
        )

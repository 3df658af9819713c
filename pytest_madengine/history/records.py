"""What the history holds, and how a value or a URL is read, without the database libraries (a
session that keeps no history never imports them)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
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


@dataclass(frozen=True)
class PastValues:
    """What the noise gate reads: each model and arch's earlier values, oldest first. Read once per
    session in one query, and handed to xdist workers as JSON: they never open the database."""

    values: Mapping[tuple[str, str], tuple[float, ...]] = field(default_factory=dict)

    def of(self, model: str, arch: str) -> list[float]:
        return list(self.values.get((model, arch), ()))

    def to_json(self) -> str:
        return json.dumps([[model, arch, list(found)] for (model, arch), found in self.values.items()])

    @classmethod
    def from_json(cls, text: str) -> PastValues:
        return cls({(str(m), str(a)): tuple(float(v) for v in found) for m, a, found in json.loads(text)})

    @classmethod
    def grouped(cls, values: Iterable[tuple[str, str, float]]) -> PastValues:
        """(model, arch, value) triples, grouped by model and arch in the order given."""
        found: dict[tuple[str, str], list[float]] = {}
        for model, arch, value in values:
            found.setdefault((model, arch), []).append(value)
        return cls({key: tuple(group) for key, group in found.items()})

    @classmethod
    def of_results(cls, stored: Sequence[StoredResult]) -> PastValues:
        """SUCCESS results with a number, in the order given."""
        return cls.grouped(
            (r.model, r.arch, r.performance) for r in stored if r.status == "SUCCESS" and r.performance is not None
        )

"""Turn a model's log and multiple_results CSV into results, by madengine's rules."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from ..errors import MadengineError

# madengine v2's PERFORMANCE_LOG_PATTERN (deployment/base.py): first match wins.
PERFORMANCE_RE = re.compile(
    r"performance:\s+([+\-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+\-]?[0-9]+)?)(?:,?\s*/[a-zA-Z]+\s*,?|,)?\s+([^\s,]+)"
)
FALLBACK_RE = re.compile(r"train_samples_per_second['\"\s:=]+([0-9][0-9.eE+-]*)")

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
SKIPPED = "SKIPPED"


class ResultsError(MadengineError):
    """A multiple_results file that madengine would also reject."""


@dataclass(frozen=True)
class Result:
    """One perf.csv row's worth of outcome."""

    model: str
    performance: str
    metric: str
    status: str
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def parse_performance(log: str) -> tuple[str, str] | None:
    """(value, metric) from the first performance line, else the HF trainer fallback."""
    match = PERFORMANCE_RE.search(log)
    if match:
        return match.group(1), match.group(2)
    fallback = FALLBACK_RE.search(log)
    if fallback:
        return fallback.group(1), "samples_per_second"
    return None


def parse_multiple_results(model: str, text: str, filename: str) -> list[Result]:
    """Rows of a multiple_results CSV; each becomes `<model>_<row model>`."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    for column in ("model", "performance", "metric"):
        if column not in header:
            raise ResultsError(f"{filename} is missing the {column} column (has: {', '.join(header) or 'nothing'})")
    results = []
    for raw in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        perf = row.get("performance", "")
        ok = _is_number(perf)
        extra = {k: v for k, v in row.items() if k not in ("model", "performance", "metric")}
        results.append(
            Result(
                model=f"{model}_{row.get('model', '')}",
                performance=perf,
                metric=row.get("metric", ""),
                status=SUCCESS if ok else FAILURE,
                reason="" if ok else "no performance value",
                extra=extra,
            )
        )
    if not results:
        raise ResultsError(f"{filename} has a header but no rows")
    return results


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.lower() not in ("nan", "+nan", "-nan")

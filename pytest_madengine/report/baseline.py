"""Compare results with an earlier run and gate regressions per model (no pytest here)."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MadengineError
from ..zoo.models import parse_percent
from .results import SUCCESS, Result

__all__ = ["Baseline", "BaselineError", "Gate", "compare", "gate", "load_baseline", "lower_is_better", "parse_percent"]

_TIME_UNITS = frozenset(
    [
        "s",
        "sec",
        "secs",
        "second",
        "seconds",
        "ms",
        "msec",
        "msecs",
        "millisecond",
        "milliseconds",
        "us",
        "usec",
        "microsecond",
        "microseconds",
        "ns",
        "nanosecond",
        "nanoseconds",
        "min",
        "mins",
        "minute",
        "minutes",
        "h",
        "hr",
        "hrs",
        "hour",
        "hours",
    ]
)
_TIME_WORDS = re.compile(r"latency|duration|time|elapsed", re.IGNORECASE)


class BaselineError(MadengineError):
    """An unreadable baseline file."""


@dataclass(frozen=True)
class Baseline:
    performance: float
    metric: str


def load_baseline(path: Path) -> dict[tuple[str, str], Baseline]:
    """Latest SUCCESS value per (model, gpu_architecture), from a perf.csv (ours or madengine's) or our JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {path}: {exc.strerror}") from None
    rows: list[dict[str, str]]
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BaselineError(f"baseline {path} is not valid JSON: {exc}") from None
        rows = [{k: str(v) for k, v in r.items()} for r in data.get("results", []) if isinstance(r, dict)]
    else:
        rows = list(csv.DictReader(text.splitlines()))
        if rows and not {"model", "performance", "status"} <= set(rows[0]):
            raise BaselineError(f"baseline {path} lacks the model, performance and status columns")
    found: dict[tuple[str, str], Baseline] = {}
    for row in rows:
        if row.get("status") != "SUCCESS":
            continue
        try:
            value = float(row.get("performance", ""))
        except (TypeError, ValueError):  # not a number, or None in a CSV row shorter than its header
            continue
        found[(row.get("model", ""), row.get("gpu_architecture", ""))] = Baseline(value, row.get("metric", ""))
    return found


def lower_is_better(metric: str, declared: object = None) -> bool:
    """models.json's `higher_is_better` when given; else time-like metrics (latency, ms, seconds,
    s/iter) are lower-is-better, while rates (samples_per_second, tokens/s) are higher-is-better."""
    if isinstance(declared, bool):
        return not declared
    text = metric.strip().lower()
    numerator = re.split(r"/|_per_|-per-| per ", text, maxsplit=1)[0].strip(" _-")
    # seconds, ms, latency_p99, s/iter, time_per_batch
    return numerator in _TIME_UNITS or _TIME_WORDS.search(numerator) is not None


@dataclass(frozen=True)
class Comparison:
    baseline: float
    measured: float
    change: float  # signed percentage, (measured - baseline) / baseline * 100
    worse_by: float  # percentage in the bad direction (negative when better)

    @property
    def relative_change(self) -> str:
        return f"{self.change:+.2f}%"


def compare(measured: float, baseline: float, lower_better: bool) -> Comparison:
    if baseline == 0:
        change = 0.0 if measured == 0 else float("inf") * (1 if measured > 0 else -1)
    else:
        change = (measured - baseline) / abs(baseline) * 100
    return Comparison(baseline, measured, change, change if lower_better else -change)


@dataclass(frozen=True)
class Gate:
    """One result against its baseline: what the summaries show, and the regression if it is one."""

    baseline: str = ""  # the baseline value, "no baseline", "performance is not a number"; "" when not compared
    relative_change: str = ""
    regression: str = ""  # why it fails the gate; "" when it passes
    comparison: Mapping[str, Any] = field(default_factory=dict)  # the history gate's numbers, for the JSON


def gate(
    results: Sequence[Result],
    arch: str,
    baselines: Mapping[tuple[str, str], Baseline],
    threshold: float | None,
    higher_is_better: object = None,
) -> tuple[Gate, ...]:
    """One Gate per result: SUCCESS results are compared with their (model, arch) baseline, and past
    `threshold` (percent in the bad direction) they regress. The results themselves are not touched."""
    return tuple(_gate_one(r, arch, baselines, threshold, higher_is_better) for r in results)


def _gate_one(
    result: Result,
    arch: str,
    baselines: Mapping[tuple[str, str], Baseline],
    threshold: float | None,
    higher_is_better: object,
) -> Gate:
    if result.status != SUCCESS:
        return Gate()
    base = baselines.get((result.model, arch))
    if base is None:
        return Gate("no baseline")
    lower = lower_is_better(result.metric, higher_is_better)
    try:
        measured = float(result.performance)
    except ValueError:
        return Gate("performance is not a number")
    found = compare(measured, base.performance, lower)
    regression = ""
    if threshold is not None and found.worse_by > threshold:
        direction = "lower" if lower else "higher"
        metric = result.metric
        regression = (
            f"{result.model}: baseline {base.performance:g} {metric}, measured {found.measured:g} {metric}, "
            f"change {found.relative_change} ({direction} is better), threshold {threshold:g}%"
        )
    return Gate(f"{base.performance:g}", found.relative_change, regression)

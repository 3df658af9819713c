"""The noise gate over a model's results: each SUCCESS result with history is judged by `noise.judge`;
a result without history keeps the baseline file's judgement (or none)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..report.baseline import Gate, compare, lower_is_better
from ..report.repeats import repeat_values
from ..report.results import SUCCESS, Result
from .noise import judge
from .records import number


def history_gates(
    results: Sequence[Result],
    lookup: Callable[[str], list[float]],
    threshold: float | None,
    k: float,
    higher_is_better: object = None,
    fallback: Sequence[Gate] = (),
) -> tuple[Gate, ...]:
    """`lookup(model)`: that model's history values, oldest first."""
    gates = []
    for index, result in enumerate(results):
        other = fallback[index] if index < len(fallback) else Gate()
        measured = number(result.performance) if result.status == SUCCESS else None
        lower = lower_is_better(result.metric, higher_is_better)
        own = repeat_values(result.extra)
        found = judge(measured, lookup(result.model), threshold, k, lower, own) if measured is not None else None
        if measured is None or found is None:
            gates.append(other)
            continue
        change = compare(measured, found.median, lower).relative_change
        regression = found.message(result.model, result.metric, lower) if found.regression else ""
        comparison = {
            "history": list(found.history),
            "median": found.median,
            "spread": found.spread,
            "measured": found.measured,
            "allowed": found.allowed if found.allowed != float("inf") else None,
            "rule": found.rule,
            "verdict": "regression" if found.regression else "pass",
        }
        label = f"median {found.median:g} (MAD {found.spread:g}, n={len(found.history)})"
        gates.append(Gate(label, change, regression, comparison))
    return tuple(gates)

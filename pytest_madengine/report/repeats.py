"""A model run N times (--madengine-repeat): one verdict from N, the median as each result's performance."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace

from .results import SUCCESS
from .verdict import Verdict

REPEATS = "repeats"  # the extra column that lists every repeat's value, in order


def combined(verdicts: Sequence[Verdict]) -> Verdict:
    """The first failed verdict when one failed; else the first run's results, each with the median of
    its values over the runs as its performance and every value in its `repeats` extra."""
    failed = next((v for v in verdicts if v.failure is not None), None)
    if failed is not None or len(verdicts) < 2:
        return failed or verdicts[0]
    results = []
    for index, first in enumerate(verdicts[0].results):
        values = [_value(v, index, first.model) for v in verdicts]
        numbers = [float(text) for text in values if _is_number(text)]
        if first.status != SUCCESS or len(numbers) != len(values):
            results.append(first)
            continue
        median = statistics.median(numbers)
        extra = {**first.extra, REPEATS: ",".join(values)}
        results.append(replace(first, performance=f"{median:g}", extra=extra))
    return Verdict(tuple(results), None)


def repeat_values(extra: dict[str, str]) -> list[float]:
    """The values of a result's repeats, from its extra; [] for a result run once."""
    return [float(text) for text in extra.get(REPEATS, "").split(",") if _is_number(text)]


def _value(verdict: Verdict, index: int, model: str) -> str:
    same = [r for r in verdict.results if r.model == model]
    found = same[0] if same else (verdict.results[index] if index < len(verdict.results) else None)
    return found.performance if found is not None else ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

"""A gate that knows a model's noise: a result against the median of its recent history, allowed to
differ by the larger of a threshold and k times the history's spread (median absolute deviation)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_K = 3.0
DEFAULT_LAST = 5
MIN_HISTORY = 3  # fewer values tell nothing of the noise: only the threshold judges then


@dataclass(frozen=True)
class NoiseJudgement:
    history: tuple[float, ...]  # oldest first
    median: float
    spread: float  # median absolute deviation of the history
    measured: float
    allowed: float  # how far in the bad direction the measured value may go
    rule: str  # which bound applied, with its numbers
    worse_by: float  # how far it went in the bad direction (negative: better)

    @property
    def regression(self) -> bool:
        return self.worse_by > self.allowed

    def message(self, model: str, metric: str, lower_is_better: bool) -> str:
        values = ", ".join(f"{v:g}" for v in self.history)
        return (
            f"{model}: history [{values}] {metric}: median {self.median:g}, spread (MAD) {self.spread:g}; "
            f"measured {self.measured:g} ({'lower' if lower_is_better else 'higher'} is better), "
            f"{self.worse_by:g} worse than the median, allowed {self.allowed:g} by {self.rule}"
        )


def mad(values: Sequence[float]) -> float:
    middle = statistics.median(values)
    return statistics.median(abs(v - middle) for v in values)


def judge(
    measured: float,
    history: Sequence[float],
    threshold_pct: float | None,
    k: float,
    lower_is_better: bool,
    repeats: Sequence[float] = (),
) -> NoiseJudgement | None:
    """None without history. The allowed change is max(threshold % of the median, k x MAD), the MAD
    of the history or of this result's own repeats, whichever is larger. With
    fewer than MIN_HISTORY values the spread is unknown: the threshold alone judges, and without one
    nothing is a regression."""
    if not history:
        return None
    middle = statistics.median(history)
    spread = max(mad(history) if len(history) > 1 else 0.0, mad(repeats) if len(repeats) > 1 else 0.0)
    by_threshold = abs(middle) * threshold_pct / 100 if threshold_pct is not None else 0.0
    by_noise = k * spread
    if len(history) < MIN_HISTORY:
        allowed = by_threshold if threshold_pct is not None else math.inf
        rule = f"threshold only: {len(history)} value(s) of history tell nothing of the noise"
        worse = measured - middle if lower_is_better else middle - measured
        return NoiseJudgement(tuple(history), middle, spread, measured, allowed, rule, worse)
    if by_noise >= by_threshold:
        rule = f"k x spread ({k:g} x {spread:g} = {by_noise:g})"
    else:
        rule = f"threshold {threshold_pct:g}% of the median ({by_threshold:g})"
    worse = measured - middle if lower_is_better else middle - measured
    return NoiseJudgement(tuple(history), middle, spread, measured, max(by_noise, by_threshold), rule, worse)

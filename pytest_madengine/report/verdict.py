"""Decide a run's results and status from what the container did (madengine's rules, plus reasons)."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.executor import RunOutcome
from .results import FAILURE, SUCCESS, Result, ResultsError, parse_multiple_results, parse_performance


@dataclass(frozen=True)
class Verdict:
    results: tuple[Result, ...]
    failure: str | None  # None when every result is SUCCESS


def judge(model: str, outcome: RunOutcome, multiple_results: str, timeout: float, timeout_source: str) -> Verdict:
    """One FAILURE row with a reason, or the parsed results."""

    def fail(reason: str, message: str) -> Verdict:
        return Verdict((Result(model, "", "", FAILURE, reason),), message)

    if outcome.timed_out:
        return fail("timeout", f"timed out after {timeout:g} s (limit from {timeout_source})")
    if outcome.exit_code != 0:
        return fail(f"exit code {outcome.exit_code}", f"exit code {outcome.exit_code}")
    if multiple_results:
        data = outcome.files.get(multiple_results)
        if data is None:
            return fail("multiple_results file missing", f"exit code 0 but the script wrote no {multiple_results}")
        try:
            results = parse_multiple_results(model, data.decode("utf-8", errors="replace"), multiple_results)
        except ResultsError as exc:
            return fail("bad multiple_results file", str(exc))
        bad = [r.model for r in results if r.status != SUCCESS]
        message = f"no performance value for {', '.join(bad)} in {multiple_results}" if bad else None
        return Verdict(tuple(results), message)
    perf = parse_performance(outcome.log)
    if perf is None:
        return fail("no performance line", "exit code 0 but no performance line ('performance: <value> <metric>')")
    return Verdict((Result(model, perf[0], perf[1], SUCCESS),), None)

"""One prepared model through an executor: start, wait with a deadline, save the log, judge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .engine.executor import Deadline, Executor, RunHandle, RunOutcome
from .report.results import SUCCESS, Result
from .report.verdict import Verdict, judge
from .zoo.models import ModelSpec

# A conftest's parse_result hook: the log, and a way to copy the run directory out to a folder.
Parser = Callable[[str, Callable[[Path], "Path | None"]], "list[Result] | None"]


@dataclass(frozen=True)
class ModelRun:
    outcome: RunOutcome
    verdict: Verdict
    log_path: Path


@dataclass(frozen=True)
class RunLog:
    """Where the model's output goes while it runs: its log file (so `tail -f` works, under xdist
    too), and `echo` (the terminal, with --madengine-live-output or -s) when given."""

    path: Path
    echo: Callable[[str], None] | None = None


def finish_model(
    executor: Executor, handle: RunHandle, spec: ModelSpec, deadline: Deadline, log: RunLog, parse: Parser | None
) -> ModelRun:
    """Wait for the started model, streaming its output to its log, and judge the run; `parse` (a
    conftest's parse_result hook) sees the log and a copy of the run directory, and wins."""
    log.path.parent.mkdir(parents=True, exist_ok=True)
    streamed: list[str] = []
    with log.path.open("w", encoding="utf-8") as sink:

        def output(text: str) -> None:
            streamed.append(text)
            sink.write(text)
            sink.flush()
            if log.echo is not None:
                log.echo(text)

        outcome = executor.wait(handle, deadline, output)
    if "".join(streamed) != outcome.log:  # the stream broke: the engine's whole log instead
        log.path.write_text(outcome.log, encoding="utf-8")
    log_path = log.path
    custom = None
    if parse is not None and outcome.exit_code == 0 and not outcome.timed_out:
        custom = parse(outcome.log, lambda dest: executor.copy_out(handle, dest))
    if custom:
        verdict = Verdict(tuple(custom), None if all(r.status == SUCCESS for r in custom) else "parse_result hook")
    else:
        verdict = judge(spec.name, outcome, spec.multiple_results, deadline.seconds, deadline.source)
    return ModelRun(outcome=outcome, verdict=verdict, log_path=log_path)

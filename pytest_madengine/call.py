"""The test function pytest calls for every model item, with the item's three fixtures."""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from .engine.executor import Deadline, ExecutorLost, RunHandle
from .engine.images import LOG_TAIL_LINES, BuiltImage, log_tail
from .engine.prepare import log_file_name
from .engine.slurm import NoResources
from .gpus.lease import Lease
from .history.gate import history_gates
from .record import ItemRecord, ModelFailure
from .report.baseline import Gate, gate
from .report.repeats import combined
from .report.results import Result
from .run_model import ModelRun, Parser, RunLog, finish_model
from .runtime import RUNTIME_KEY, Runtime
from .zoo.models import parse_percent
from .zoo.tools import OUTPUT_DIR


def model_test(
    request: pytest.FixtureRequest,
    madengine_image: BuiltImage,
    madengine_gpus: Lease,
    madengine_container: RunHandle | None,
) -> None:
    """Wait for the model the fixtures started, judge it, gate it against the baseline."""
    if madengine_container is None:
        return  # --madengine-build-only: the image fixture built it, and that is the test
    item = request.node
    record: ItemRecord = item.record
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    if runtime.settings.slurm is None:  # under SLURM the node says which GPUs (below, from the run)
        item.user_properties.append(("gpus", madengine_gpus.ids_text))
    try:
        run = _run(item, record, runtime, madengine_container, madengine_gpus)
        if runtime.settings.repeat > 1:
            record.run = run = _repeat(item, record, runtime, run, madengine_gpus)
        item.add_report_section("call", "stdout", run.outcome.log)
        _judge(record, runtime, run, madengine_image)
    except Exception:
        record.call_failed = True
        raise


def _run(item: pytest.Item, record: ItemRecord, runtime: Runtime, handle: RunHandle, lease: Lease) -> ModelRun:
    spec = record.spec
    seconds, source = runtime.settings.timeout_for(spec.timeout)
    base = record.dockerfile.base_name if record.dockerfile else "none"
    log_path = runtime.settings.log_dir / log_file_name(spec, base, record.arch)
    log = RunLog(
        log_path, _echo(item.config) if runtime.settings.live_output and runtime.worker_id == "controller" else None
    )
    if runtime.progress is not None:
        runtime.progress(f"[run] {item.nodeid}: output in {log_path}")
    try:
        release = lease.release if runtime.settings.repeat <= 1 else None  # repeats hold the GPUs to the last
        record.run = finish_model(
            runtime.executor(), handle, spec, Deadline(seconds, source, release), log, _parser(item, runtime)
        )
        placement = record.run.outcome.placement
        if placement:  # the ids SLURM allocated (the worker's lease is a count only)
            item.user_properties += [("gpus", placement.get("gpus", "")), ("slurm_job", placement.get("job", ""))]
        _keep_rank_logs(item, log_path, record.run.outcome.rank_logs)
        if runtime.tools(spec.root):
            _bring_back_artifacts(item, runtime, handle)
    except NoResources as exc:
        pytest.skip(str(exc))
    except ExecutorLost as exc:
        raise type(exc)(f"model {spec.name} on {record.arch}: {exc}") from None
    return record.run


def _repeat(item: pytest.Item, record: ItemRecord, runtime: Runtime, first: ModelRun, lease: Lease) -> ModelRun:
    """--madengine-repeat N: the model again in a fresh container each time, until N runs or one
    fails; each run's log beside the first (`.repeat<i>.run.log`); one verdict, the medians."""
    spec, executor, prepared = record.spec, runtime.executor(), record.prepared
    assert prepared is not None
    seconds, source = runtime.settings.timeout_for(spec.timeout)
    count, verdicts = runtime.settings.repeat, [first.verdict]
    try:
        for index in range(2, count + 1):
            if verdicts[-1].failure is not None:
                break
            log = RunLog(
                first.log_path.with_name(first.log_path.name.removesuffix(".run.log") + f".repeat{index}.run.log")
            )
            handle = executor.start(prepared)
            try:
                deadline = Deadline(seconds, source, lease.release if index == count else None)
                verdicts.append(finish_model(executor, handle, spec, deadline, log, _parser(item, runtime)).verdict)
            finally:
                executor.finish(handle, keep=False)
    finally:
        lease.release()  # (again, if the last run gave them back already: a release is idempotent)
    item.user_properties.append(("repeats", str(len(verdicts))))
    return replace(first, verdict=combined(verdicts))


def _keep_rank_logs(item: pytest.Item, log_path: Path, rank_logs: Mapping[int, str]) -> None:
    """A multi-node run's other nodes: each log beside the run log (`.rank<N>.run.log`), its path a
    JUnit property, its text a section of the report."""
    for rank, text in sorted(rank_logs.items()):
        path = log_path.with_name(log_path.name.removesuffix(".run.log") + f".rank{rank}.run.log")
        path.write_text(text, encoding="utf-8")
        item.user_properties.append((f"log_rank{rank}", str(path)))
        item.add_report_section("call", f"rank {rank} log", text)


def _bring_back_artifacts(item: pytest.Item, runtime: Runtime, handle: RunHandle) -> None:
    """What the tools wrote to $MAD_TOOL_OUTPUT, into <log dir>/<item>/; its path a JUnit property."""
    dest = runtime.settings.log_dir / re.sub(r"[^A-Za-z0-9_.-]", "_", item.name)
    dest.mkdir(parents=True, exist_ok=True)
    found = runtime.executor().copy_out(handle, dest, OUTPUT_DIR)
    if found is not None:
        item.user_properties.append(("artifacts", str(found)))


def _echo(config: pytest.Config) -> Callable[[str], None]:
    """The model's output on the terminal as it comes, past pytest's output capture."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    terminal = config.pluginmanager.get_plugin("terminalreporter")

    def echo(text: str) -> None:
        if capture is not None and terminal is not None:
            with capture.global_and_fixture_disabled():
                terminal.write(text)
                terminal.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    return echo


def _parser(item: pytest.Item, runtime: Runtime) -> Parser | None:
    """The conftest's parse_result hook, when there is one: it gets the log and a copy of the run directory."""
    hook = item.ihook.pytest_madengine_parse_result
    if not hook.get_hookimpls():
        return None

    def parse(log: str, copy_out: Callable[[Path], Path | None]) -> list[Result] | None:
        workdir = copy_out(Path(tempfile.mkdtemp(prefix="workdir-", dir=runtime.shared_dir)))
        if workdir is None:
            return None
        found: list[Result] | None = hook(item=item, log=log, workdir=workdir)
        return found

    return parse


def _history_gates(record: ItemRecord, runtime: Runtime, run: ModelRun, threshold: float | None) -> tuple[Gate, ...]:
    """The noise gate where the history holds results of the model (its own noise_k, else the session's)."""
    settings, past, spec = runtime.settings.history, runtime.past_values(), record.spec
    assert settings is not None

    def lookup(model: str) -> list[float]:
        return past.of(model, record.arch)

    own_k = spec.extra.get("noise_k")
    k = float(own_k) if isinstance(own_k, (int, float)) and own_k > 0 else settings.k
    return history_gates(run.verdict.results, lookup, threshold, k, spec.extra.get("higher_is_better"), record.gates)


def _judge(record: ItemRecord, runtime: Runtime, run: ModelRun, image: BuiltImage) -> None:
    """Raise for a failed run; else gate the results against the baseline and raise for a regression."""
    spec = record.spec
    baselines = runtime.baselines()
    own = spec.extra.get("max_regression")
    threshold = parse_percent(str(own)) if own not in (None, "") else runtime.settings.max_regression
    if baselines is not None:
        record.gates = gate(run.verdict.results, record.arch, baselines, threshold, spec.extra.get("higher_is_better"))
    if runtime.settings.history is not None:
        record.gates = _history_gates(record, runtime, run, threshold)
    if run.verdict.failure is not None:
        raise ModelFailure(
            f"model {spec.name} on {record.arch} failed: {run.verdict.failure}\n"
            f"image: {image.tag}\nlog: {run.log_path}\n"
            f"--- last {LOG_TAIL_LINES} lines of the container log ---\n{log_tail(run.outcome.log)}"
        )
    regressions = [g.regression for g in record.gates if g.regression]
    if regressions:
        raise ModelFailure(f"model {spec.name} on {record.arch}: performance regression\n" + "\n".join(regressions))

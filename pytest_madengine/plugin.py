"""pytest hooks: thin wiring around the plain modules of this package."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import hookspecs
from .engine.cleanup import install_sigterm_as_interrupt, orphan_report, restore_sigterm
from .engine.client import DockerUnavailable
from .errors import MadengineError
from .fixtures import madengine_container, madengine_gpus, madengine_image
from .gpus.detect import Detection, detect_gpus
from .history_hooks import register as register_history
from .nodes import ModelItem, ModelsFile, with_selected_args
from .options import addoption
from .record import InvalidCard
from .report.baseline import BaselineError
from .report.perfcsv import PerfCsvError, check_writable
from .reporting import CrashedWorkerRows, ManifestWriter, PerfCsvWriter, ResultsCollector, conclude
from .runtime import RUNTIME_KEY, Runtime, pool_of
from .settings import Settings, read_settings
from .zoo.tags import TagError, parse_selectors, select
from .zoo.tools import ToolsError, select_tools

__all__ = ["madengine_container", "madengine_gpus", "madengine_image"]  # fixtures, found by pytest here

DETECTION_KEY = pytest.StashKey[Detection]()
SETTINGS_KEY = pytest.StashKey[Settings]()
SIGTERM_KEY = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    addoption(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _runs_tests(config: pytest.Config) -> bool:
    return not (config.getoption("collectonly") or config.getoption("setuponly") or config.getoption("setupplan"))


def _settings(config: pytest.Config) -> Settings:
    """The options, read once per process (`-n auto` asks before pytest_configure)."""
    if SETTINGS_KEY not in config.stash:
        config.stash[SETTINGS_KEY] = read_settings(config)
    return config.stash[SETTINGS_KEY]


def _detection(config: pytest.Config) -> Detection:
    """Probe the host once per session, on the controller; workers get the result."""
    if DETECTION_KEY not in config.stash:
        config.stash[DETECTION_KEY] = detect_gpus(timeout=float(config.getoption("madengine_probe_timeout")))
    return config.stash[DETECTION_KEY]


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per GPU in the pool, and at least one."""
    return max(1, pool_of(_detection(config), _settings(config)).size)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "madengine: an item made from a models.json entry")
    config.addinivalue_line("markers", "timeout(seconds): the model's limit (read by pytest-timeout when loaded)")
    workerinput = getattr(config, "workerinput", None)
    runtime = Runtime.create(_settings(config), workerinput, None if workerinput else _detection(config))
    config.stash[RUNTIME_KEY] = runtime
    config.stash[SIGTERM_KEY] = install_sigterm_as_interrupt()
    if workerinput:
        return
    try:
        select_tools(runtime.settings.tools, runtime.settings.context.raw.get("tools"), runtime.catalog())
    except ToolsError as exc:
        runtime.close()
        raise pytest.UsageError(f"--madengine-tools: {exc}") from None
    if runtime.settings.context.unknown:
        config.issue_config_time_warning(
            pytest.PytestWarning(
                f"madengine context: unknown key(s) ignored: {', '.join(runtime.settings.context.unknown)}"
            ),
            stacklevel=2,
        )
    for warning in runtime.detection.warnings:
        config.issue_config_time_warning(pytest.PytestWarning(f"GPU detection: {warning}"), stacklevel=2)
    if runtime.pool.explicit and runtime.pool.ids and not runtime.pool.has_devices:
        config.issue_config_time_warning(
            pytest.PytestWarning(
                "--madengine-gpus names GPUs but this host has no GPU devices: "
                "leases are exclusive as usual, containers get no devices"
            ),
            stacklevel=2,
        )
    if _runs_tests(config):
        try:
            check_writable(runtime.settings.perf_csv)
        except PerfCsvError as exc:
            runtime.close()
            raise pytest.UsageError(str(exc)) from None
        config.pluginmanager.register(CrashedWorkerRows(), "madengine-crashed-workers")
        config.pluginmanager.register(PerfCsvWriter(runtime.settings.perf_csv), "madengine-perf-csv")
        config.pluginmanager.register(
            ResultsCollector(config, runtime, int(config.getoption("verbose"))), "madengine-results"
        )
        if runtime.settings.baseline is not None:
            try:
                runtime.baselines()
            except BaselineError as exc:
                raise pytest.UsageError(f"--madengine-baseline: {exc}") from None
        if runtime.settings.manifest_out is not None:
            config.pluginmanager.register(ManifestWriter(runtime.settings.manifest_out), "madengine-manifest")
        register_history(config, runtime)
    if runtime.settings.verbose > 0 and not _is_worker(config):
        runtime.progress = _terminal_line(config)


def _terminal_line(config: pytest.Config) -> Callable[[str], None]:
    """Print a line now, past output capture: long builds show their steps as they go (-v)."""

    def write(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(line)
        else:
            reporter.write_line(line)

    return write


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: hand the run id, shared directory and GPU detection to each worker."""
    node.workerinput.update(node.config.stash[RUNTIME_KEY].worker_input())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist: a worker that died (SIGKILL, crash) cannot remove its containers; the controller does."""
    if error is None:
        return
    worker = str(node.workerinput.get("workerid", ""))
    runtime: Runtime = node.config.stash[RUNTIME_KEY]
    removed = runtime.executor().remove_run(runtime.run_id, worker=worker)
    if removed:
        node.config.issue_config_time_warning(
            pytest.PytestWarning(f"removed {removed} container(s) left by crashed worker {worker}"), stacklevel=2
        )


def _check_docker(config: pytest.Config, nodeids: Sequence[str]) -> None:
    """One clear session-level error when models are to run and the engine cannot be reached."""
    if not _runs_tests(config) or not any("models.json::" in nodeid for nodeid in nodeids):
        return
    try:
        config.stash[RUNTIME_KEY].client()
    except DockerUnavailable as exc:
        pytest.exit(f"pytest-madengine: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not _is_worker(session.config):
        _check_docker(session.config, [item.nodeid for item in session.items])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: Sequence[str]) -> None:
    _check_docker(node.config, ids)


def pytest_unconfigure(config: pytest.Config) -> None:
    runtime: Runtime | None = config.stash.get(RUNTIME_KEY, None)
    restore_sigterm(config.stash.get(SIGTERM_KEY, None))
    if runtime is None:
        return
    if not _is_worker(config) and _runs_tests(config) and runtime.used_docker():
        runtime.executor().remove_run(runtime.run_id)  # whatever an interrupted or killed worker left behind
    runtime.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ModelsFile | None:
    if file_path.name == "models.json":
        return ModelsFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--madengine-tags selection; then, under xdist, models that need more GPUs go first (stable
    otherwise): big leases start on an idle pool and small ones fill the gaps."""
    settings = config.stash[RUNTIME_KEY].settings
    if settings.tags:
        models = [item for item in items if isinstance(item, ModelItem)]
        try:
            chosen = select({m.spec.name: m.spec for m in models}.values(), parse_selectors(settings.tags))
        except TagError as exc:
            raise pytest.UsageError(str(exc)) from None
        deselected = [m for m in models if m.spec.name not in chosen]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            dropped = {id(item) for item in deselected}
            items[:] = [item for item in items if id(item) not in dropped]
        taken = {item.nodeid for item in items}
        items[:] = [variant for item in items for variant in with_selected_args(item, chosen, taken)]
    if not _is_worker(config):
        return
    pool = config.stash[RUNTIME_KEY].pool.size

    def need(item: pytest.Item) -> int:
        if not isinstance(item, ModelItem):
            return 0
        return pool if item.spec.n_gpus == -1 else item.spec.n_gpus

    items.sort(key=need, reverse=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    runtime: Runtime = config.stash[RUNTIME_KEY]
    lines = [runtime.detection.header_line(), runtime.pool.describe()]
    if _runs_tests(config):
        lines.append(f"madengine logs: {runtime.settings.log_dir} (each model's run log fills as it runs: tail -f)")
    if runtime.detection.driver_version:
        lines.append(f"madengine driver: {runtime.detection.driver_version}")
    lines.extend(f"madengine GPU detection warning: {w}" for w in runtime.detection.warnings)
    orphans = config.stash.get(ORPHANS_KEY, None)
    if orphans:
        lines.append(orphans)
    return lines


ORPHANS_KEY = pytest.StashKey[str | None]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Reap (or count) what earlier runs left, before the header prints, even with -q or --no-header."""
    config = session.config
    runtime: Runtime = config.stash[RUNTIME_KEY]
    if not _is_worker(config) and (_runs_tests(config) or runtime.settings.reap):
        config.stash[ORPHANS_KEY] = orphan_report(runtime.client, runtime.run_id, runtime.settings.reap)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout: our items enforce the limit on the container itself (killed through the API),
    so no signal or thread timer interrupts the process."""
    return True if isinstance(item, ModelItem) else None


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    return True if isinstance(item, ModelItem) else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if isinstance(item, ModelItem):
        item.record.start_over()
        if item.record.broken:
            raise InvalidCard(item.record.broken)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """The item's record onto its concluding report (so it reaches the controller under xdist), and
    errors about the model or the engine shown as their message, not a traceback of plugin code."""
    report = yield
    if not isinstance(item, ModelItem):
        return report
    exc = call.excinfo.value if call.excinfo else None
    if report.failed and isinstance(exc, MadengineError):
        report.longrepr = exc.describe()
    if _runs_tests(item.config):
        conclude(item, item.record, report, call)
    return report

"""pytest hooks and fixtures: thin wiring around the plain modules of this package."""

from __future__ import annotations

import warnings
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .archs import vendor_of
from .gpu_detect import Detection, detect_gpus
from .images import BuiltImage, ImageBuildError
from .lease import Lease
from .nodes import RELEASE_GPUS_KEY, ModelItem, ModelsFile, skip_item
from .perfcsv import PerfCsvError, append_rows, check_writable
from .results import FAILURE, SKIPPED, Result
from .rows import RowFacts, junit_properties, perf_row
from .runtime import RUNTIME_KEY, DockerUnavailable, Runtime, pool_of, remove_run_containers
from .settings import addoption, read_settings


def pytest_addoption(parser: pytest.Parser) -> None:
    addoption(parser)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _writes_reports(config: pytest.Config) -> bool:
    """Only the controller writes reports, and only when tests really run."""
    return not _is_worker(config) and not (
        config.getoption("collectonly") or config.getoption("setuponly") or config.getoption("setupplan")
    )


DETECTION_KEY = pytest.StashKey[Detection]()


def _detection(config: pytest.Config) -> Detection:
    """Probe the host once per session, on the controller; workers get the result."""
    if DETECTION_KEY not in config.stash:
        config.stash[DETECTION_KEY] = detect_gpus(timeout=float(config.getoption("madengine_probe_timeout")))
    return config.stash[DETECTION_KEY]


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per GPU in the pool, and at least one."""
    return max(1, pool_of(_detection(config), read_settings(config)).size)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "madengine: an item made from a models.json entry")
    workerinput = getattr(config, "workerinput", None)
    settings = read_settings(config)
    runtime = Runtime.create(settings, workerinput, None if workerinput else _detection(config))
    config.stash[RUNTIME_KEY] = runtime
    if not workerinput:
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
    if _writes_reports(config):
        try:
            check_writable(runtime.settings.perf_csv)
        except PerfCsvError as exc:
            runtime.close()
            raise pytest.UsageError(str(exc)) from None
        config.pluginmanager.register(PerfCsvWriter(runtime.settings.perf_csv), "madengine-perf-csv")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: hand the run id and shared directory to each worker."""
    node.workerinput.update(node.config.stash[RUNTIME_KEY].worker_input())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist: a worker that died (SIGKILL, crash) cannot remove its containers; the controller does."""
    if error is None:
        return
    runtime: Runtime = node.config.stash[RUNTIME_KEY]
    worker = str(node.workerinput.get("workerid", ""))
    removed = remove_run_containers(runtime, worker=worker)
    if removed:
        node.config.issue_config_time_warning(
            pytest.PytestWarning(f"removed {removed} container(s) left by crashed worker {worker}"), stacklevel=2
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    runtime = config.stash.get(RUNTIME_KEY, None)
    if runtime is not None:
        runtime.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ModelsFile | None:
    if file_path.name == "models.json":
        return ModelsFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def madengine_image(request: pytest.FixtureRequest) -> BuiltImage:
    """The item's image, built at most once per session for all items and workers that share it."""
    item = request.node
    if not isinstance(item, ModelItem):
        raise pytest.UsageError("madengine_image is for models.json items")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    return runtime.builder().get(item.build_request(runtime.settings.build_args))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, models that need more GPUs go first (stable otherwise): big leases start on an
    idle pool and small ones fill the gaps, rather than big ones waiting for a busy pool to drain."""
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
    if runtime.detection.driver_version:
        lines.append(f"madengine driver: {runtime.detection.driver_version}")
    lines.extend(f"madengine GPU detection warning: {w}" for w in runtime.detection.warnings)
    return lines


@pytest.fixture
def madengine_gpus(request: pytest.FixtureRequest) -> Generator[Lease, None, None]:
    """The GPUs this item holds while it runs, exclusive across all workers of the session."""
    item = request.node
    if not isinstance(item, ModelItem):
        raise pytest.UsageError("madengine_gpus is for models.json items")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    pool = runtime.pool
    wanted = pool.size if item.spec.n_gpus == -1 else item.spec.n_gpus
    if wanted > pool.size:
        skip_item(f"needs {wanted} GPU{'s' if wanted != 1 else ''}, the pool has {pool.size}")
    vendor = vendor_of(item.arch)
    if wanted == 0:
        yield pool.lease((), vendor)
        return
    allocator = runtime.allocator()
    grant = allocator.acquire(wanted, holder=item.nodeid)
    item.stash[RELEASE_GPUS_KEY] = lambda: allocator.release(grant, holder=item.nodeid)
    try:
        yield pool.lease(grant.ids, vendor)
    finally:
        allocator.release(grant, holder=item.nodeid)


def _reason_of(report: pytest.TestReport, call: pytest.CallInfo[None]) -> str:
    if report.skipped:
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            return str(longrepr[2]).removeprefix("Skipped: ")
        return "skipped"
    exc = call.excinfo.value if call.excinfo else None
    if isinstance(exc, ImageBuildError):
        return "image build failed"
    if isinstance(exc, DockerUnavailable):
        return "docker unavailable"
    return f"{type(exc).__name__}: {exc}" if exc else "error"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the item's perf.csv rows to its report, so they reach the controller under xdist."""
    report = yield
    if not isinstance(item, ModelItem) or call.when == "teardown":
        return report
    if item.config.getoption("setuponly") or item.config.getoption("setupplan"):
        return report
    rows = item.madengine_rows
    if not rows and (report.skipped or report.failed):
        status = SKIPPED if report.skipped else FAILURE
        image = item.funcargs.get("madengine_image") if hasattr(item, "funcargs") else None
        facts = item.row_facts(image if isinstance(image, BuiltImage) else None, 0)
        rows = [perf_row(Result(item.spec.name, "", "", status, _reason_of(report, call)), facts)]
    elif call.when == "setup":
        return report
    if rows:
        report.madengine_rows = rows  # type: ignore[attr-defined]
        item.user_properties.extend(junit_properties(rows))
        item.madengine_rows = []
    return report


def crashed_worker_rows(report: pytest.TestReport) -> list[dict[str, str]]:
    """xdist reports a crashed worker's item with when='???' and nothing of ours: keep a row anyway."""
    path, _, rest = report.nodeid.partition("::")
    if str(report.when) != "???" or not report.failed or not path.endswith("models.json") or "[" not in rest:
        return []
    name, _, params = rest.partition("[")
    arch = params.rstrip("]").split("-", 1)[0]
    facts = RowFacts(n_gpus=0, training_precision="", args="", tags=(), docker_file="", gpu_architecture=arch)
    return [perf_row(Result(name, "", "", FAILURE, "worker crashed"), facts)]


class PerfCsvWriter:
    """Registered on the process that writes reports; appends each report's rows as it arrives,
    so a crash mid-run leaves the rows of finished models in place."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rows = getattr(report, "madengine_rows", None) or crashed_worker_rows(report)
        if not rows:
            return
        try:
            append_rows(self.path, rows)
        except (OSError, PerfCsvError) as exc:
            warnings.warn(f"pytest-madengine: could not write perf.csv rows for {report.nodeid}: {exc}", stacklevel=1)

"""Command-line and ini options, read once into a plain value."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .engine.build_args import BuildArgSources
from .engine.run_options import ISOLATIONS
from .engine.slurm import SlurmOptions
from .zoo.archs import ArchError, parse_arch_list
from .zoo.context import ContextError, RunContext, build_context

DEFAULT_TIMEOUT = 7200


@dataclass(frozen=True)
class Settings:
    archs: tuple[str, ...]  # empty: ask the host
    build_args: dict[str, str] = field(default_factory=dict)
    perf_csv: Path = Path("perf.csv")
    log_dir: Path = Path("madengine_logs")
    timeout_option: int | None = None
    timeout_default: int = DEFAULT_TIMEOUT
    guest_os: str = "UBUNTU"
    ignore_skip_gpu_arch: bool = False
    gpus: str | None = None
    probe_timeout: float = 5.0
    lease_log: Path | None = None
    keep_containers: str = "never"
    isolation: str = "madengine"
    tools: tuple[str, ...] = ()
    tools_file: Path | None = None
    live_output: bool = False
    build_only: bool = False
    rebuild: bool = False
    pull: bool = False
    manifest_out: Path | None = None
    manifest: Path | None = None
    registry: str | None = None
    credential_file: Path = Path("credential.json")
    verbose: int = 0
    baseline: Path | None = None
    max_regression: float | None = None
    json_out: Path | None = None
    html_out: Path | None = None
    context: RunContext = field(default_factory=RunContext)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    tags: tuple[str, ...] = ()
    reap: bool = False
    slurm: SlurmOptions | None = None  # None: the local engine
    history: HistorySettings | None = None  # None: no results history
    repeat: int = 1  # runs per model (--madengine-repeat); the median is its performance

    def build_arg_sources(self) -> BuildArgSources:
        return BuildArgSources(
            context_args=self.context.docker_build_arg,
            secrets=self.secrets,
            credential_file=self.credential_file,
            cli_args=self.build_args,
        )

    def timeout_for(self, model_timeout: int) -> tuple[int, str]:
        """(seconds, where it came from): the option, then models.json, then the ini default."""
        if self.timeout_option is not None:
            return self.timeout_option, "--madengine-timeout"
        if model_timeout > 0:
            return model_timeout, "models.json"
        return self.timeout_default, "default"


def read_settings(config: pytest.Config) -> Settings:
    invocation = Path(config.invocation_params.dir)
    archs = _archs(config)
    build_args = _build_args(config)
    timeout_option, timeout_default = _timeouts(config)
    _check_image_options(config)
    max_regression = _max_regression(config)
    context = _context(config, invocation)
    perf = config.getoption("madengine_perf_csv")
    logs = config.getoption("madengine_log_dir")
    return Settings(
        archs=tuple(archs),
        build_args=build_args,
        perf_csv=(invocation / perf) if perf else invocation / "perf.csv",
        log_dir=(invocation / logs) if logs else invocation / "madengine_logs",
        timeout_option=timeout_option,
        timeout_default=timeout_default,
        guest_os=str(config.getoption("madengine_guest_os") or context.guest_os or "UBUNTU").upper(),
        ignore_skip_gpu_arch=bool(config.getoption("madengine_ignore_skip_gpu_arch")),
        gpus=config.getoption("madengine_gpus") or context.docker_gpus,
        context=context,
        secrets={k: v for k, v in os.environ.items() if "MAD_SECRETS" in k},
        tags=tuple(config.getoption("madengine_tags")),
        keep_containers=str(config.getoption("madengine_keep_containers")),
        isolation=_isolation(config),
        tools=tuple(n.strip() for value in config.getoption("madengine_tools") for n in value.split(",") if n.strip()),
        tools_file=_path(invocation, config.getoption("madengine_tools_file")),
        live_output=bool(config.getoption("madengine_live_output")) or config.getoption("capture") == "no",
        build_only=bool(config.getoption("madengine_build_only")),
        rebuild=bool(config.getoption("madengine_rebuild")),
        pull=bool(config.getoption("madengine_pull")),
        manifest_out=_path(invocation, config.getoption("madengine_manifest_out")),
        manifest=_path(invocation, config.getoption("madengine_manifest")),
        registry=config.getoption("madengine_registry"),
        credential_file=_path(invocation, config.getoption("madengine_credential_file"))
        or invocation / "credential.json",
        verbose=int(config.getoption("verbose")),
        baseline=_path(invocation, config.getoption("madengine_baseline")),
        max_regression=max_regression,
        json_out=_path(invocation, config.getoption("madengine_json")),
        html_out=_path(invocation, config.getoption("madengine_html")),
        reap=bool(config.getoption("madengine_reap")),
        slurm=_slurm(config, context, invocation),
        history=_history(config, invocation),
        repeat=_repeat(config),
        probe_timeout=float(config.getoption("madengine_probe_timeout")),
        lease_log=(invocation / lease_log) if (lease_log := config.getoption("madengine_lease_log")) else None,
    )


def _archs(config: pytest.Config) -> list[str]:
    try:
        return parse_arch_list(config.getoption("madengine_arch") or [str(config.getini("madengine_arch"))])
    except ArchError as exc:
        raise pytest.UsageError(f"--madengine-arch: {exc}") from None


def _build_args(config: pytest.Config) -> dict[str, str]:
    build_args: dict[str, str] = {}
    for item in config.getoption("madengine_build_arg"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"--madengine-build-arg expects KEY=VALUE, got {item!r}")
        build_args[key.strip()] = value
    return build_args


def _slurm(config: pytest.Config, context: RunContext, invocation: Path) -> SlurmOptions | None:
    """--madengine-slurm* options, else their ini mirrors, else the context's `slurm` block."""
    block = context.raw.get("slurm")
    block = block if isinstance(block, dict) else {}
    enabled = config.getoption("madengine_slurm")
    if not (enabled if enabled is not None else config.getini("madengine_slurm") or bool(block)):
        return None

    def field(name: str) -> str:
        given = config.getoption(f"madengine_slurm_{name}") or config.getini(f"madengine_slurm_{name}")
        return str(given or block.get(name, "") or "")

    queue = config.getoption("madengine_slurm_queue_timeout")
    if queue is not None and queue < 0:
        raise pytest.UsageError(f"--madengine-slurm-queue-timeout must be >= 0, got {queue}")
    return SlurmOptions(
        partition=field("partition"),
        account=field("account"),
        qos=field("qos"),
        reservation=field("reservation"),
        constraint=field("constraint"),
        extra_args=tuple(config.getoption("madengine_slurm_arg")),
        queue_timeout_s=int(queue or 0),
        shared_dir=str(invocation / shared) if (shared := field("shared_dir")) else "",
    )


@dataclass(frozen=True)
class HistorySettings:
    url: str
    autosave: bool = False
    last: int = 5  # how many of the newest results the noise gate looks at
    run: str = ""  # compare with this run's results only
    k: float = 3.0


def _history(config: pytest.Config, invocation: Path) -> HistorySettings | None:
    """--madengine-storage (else its ini), --madengine-autosave, --madengine-compare, --madengine-noise-k."""
    from .history.records import default_url

    url = str(config.getoption("madengine_storage") or config.getini("madengine_storage") or "")
    autosave = config.getoption("madengine_autosave")
    autosave = bool(autosave if autosave is not None else config.getini("madengine_autosave"))
    compare = str(config.getoption("madengine_compare") or "")
    if not (url or autosave or compare):
        return None
    k = config.getoption("madengine_noise_k")
    if k is not None and k <= 0:
        raise pytest.UsageError(f"--madengine-noise-k must be above 0, got {k:g}")
    last, run = 5, ""
    if compare == "last":
        last = 1
    elif compare.isdigit():
        last = int(compare)
        if last < 1:
            raise pytest.UsageError("--madengine-compare N must be at least 1")
    elif compare:
        run = compare
    return HistorySettings(url or default_url(invocation), autosave, last, run, 3.0 if k is None else float(k))


def _repeat(config: pytest.Config) -> int:
    count = int(config.getoption("madengine_repeat"))
    if count < 1:
        raise pytest.UsageError(f"--madengine-repeat must be at least 1, got {count}")
    return count


def _isolation(config: pytest.Config) -> str:
    value = str(config.getoption("madengine_isolation") or config.getini("madengine_isolation") or "madengine")
    if value not in ISOLATIONS:
        raise pytest.UsageError(f"ini madengine_isolation must be one of {', '.join(ISOLATIONS)}, got {value!r}")
    return value


def _timeouts(config: pytest.Config) -> tuple[int | None, int]:
    """(--madengine-timeout or None, the ini default), both checked."""
    timeout_option = config.getoption("madengine_timeout")
    if timeout_option == -1:
        timeout_option = None  # madengine's `--timeout -1`: the default (the model's, else the ini's)
    if timeout_option is not None and timeout_option < 0:
        raise pytest.UsageError(f"--madengine-timeout must be >= 0 (or -1: the default), got {timeout_option}")
    raw_default = str(config.getini("madengine_timeout")).strip() or str(DEFAULT_TIMEOUT)
    try:
        timeout_default = int(raw_default)
    except ValueError:
        raise pytest.UsageError(f"ini madengine_timeout must be an integer, got {raw_default!r}") from None
    return timeout_option, timeout_default


def _check_image_options(config: pytest.Config) -> None:
    """A bad registry or a contradictory manifest/build-only pair is a usage error before any build."""
    registry = config.getoption("madengine_registry")
    if registry:
        from .engine.registry import Registry

        try:
            Registry.parse(registry)
        except ValueError as exc:
            raise pytest.UsageError(f"--madengine-registry: {exc}") from None
    if config.getoption("madengine_manifest") and config.getoption("madengine_build_only"):
        raise pytest.UsageError("--madengine-manifest runs prebuilt images: it cannot go with --madengine-build-only")


def _max_regression(config: pytest.Config) -> float | None:
    if config.getoption("madengine_max_regression") is None:
        return None
    from .zoo.models import parse_percent

    try:
        return parse_percent(config.getoption("madengine_max_regression"))
    except ValueError as exc:
        raise pytest.UsageError(f"--madengine-max-regression: {exc}") from None


def _context(config: pytest.Config, invocation: Path) -> RunContext:
    try:
        return build_context(
            config.getoption("madengine_context"), _path(invocation, config.getoption("madengine_context_file"))
        )
    except ContextError as exc:
        raise pytest.UsageError(f"madengine context: {exc}") from None


def _path(base: Path, value: str | None) -> Path | None:
    return base / value if value else None

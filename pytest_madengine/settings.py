"""Command-line and ini options, read once into a plain value."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .engine.build_args import BuildArgSources
from .engine.run_options import ISOLATIONS
from .zoo.archs import ArchError, parse_arch_list
from .zoo.context import ContextError, RunContext, build_context

DEFAULT_TIMEOUT = 7200


def addoption(parser: pytest.Parser) -> None:
    """Every option in one "madengine" group; the helpers add them in --help order."""
    group = parser.getgroup("madengine", "madengine model zoo")
    _add_target_options(group)
    _add_output_options(group)
    _add_run_options(group)
    _add_gpu_options(group)
    _add_container_options(group)
    _add_image_options(group)
    _add_report_options(group)
    _add_selection_options(group)
    _add_ini_options(parser)


def _add_target_options(group: pytest.OptionGroup) -> None:
    """What to build for: archs and build args."""
    group.addoption(
        "--madengine-arch",
        action="append",
        default=[],
        metavar="ARCHS",
        help="GPU architectures to make items for (comma list, repeatable), e.g. gfx90a,gfx942 or sm_90; "
        "default: the host's, or 'cpu' on a host without GPUs",
    )
    group.addoption(
        "--madengine-build-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra docker build arg for every image (repeatable), e.g. BASE_DOCKER=rocm/pytorch:latest",
    )


def _add_output_options(group: pytest.OptionGroup) -> None:
    """Where perf.csv rows and logs go."""
    group.addoption(
        "--madengine-perf-csv",
        default=None,
        metavar="PATH",
        help="perf.csv to append rows to (default: perf.csv in the invocation directory)",
    )
    group.addoption(
        "--madengine-log-dir",
        default=None,
        metavar="DIR",
        help="where build and run logs go (default: madengine_logs in the invocation directory)",
    )


def _add_run_options(group: pytest.OptionGroup) -> None:
    """How each model runs: timeout, guest OS, skip_gpu_arch."""
    group.addoption(
        "--madengine-timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="limit for every model's run, overriding models.json; 0 means none",
    )
    group.addoption(
        "--madengine-guest-os",
        default=None,
        metavar="OS",
        help="guest_os for the Dockerfiles' # CONTEXT filter (default UBUNTU)",
    )
    group.addoption(
        "--madengine-ignore-skip-gpu-arch",
        action="store_true",
        default=False,
        help="run models even on archs their skip_gpu_arch lists",
    )


def _add_gpu_options(group: pytest.OptionGroup) -> None:
    """The GPU pool: which GPUs, detection timeout, lease log."""
    group.addoption(
        "--madengine-gpus",
        default=None,
        metavar="IDS",
        help="the GPU pool to lease from: ids and ranges (0,2-5) or 'none'; default: every detected GPU",
    )
    group.addoption(
        "--madengine-probe-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="limit for each GPU detection tool (amd-smi, rocminfo, rocm-smi, nvidia-smi); default 5",
    )
    group.addoption(
        "--madengine-lease-log",
        default=None,
        metavar="PATH",
        help="append one JSON line per GPU lease acquired and released (ids, test, time)",
    )


def _add_container_options(group: pytest.OptionGroup) -> None:
    """Keeping and reaping model containers."""
    group.addoption(
        "--madengine-keep-containers",
        choices=("never", "on-failure", "always"),
        default="never",
        help="keep model containers for inspection and print the `docker exec` command (default never)",
    )
    group.addoption(
        "--madengine-isolation",
        choices=ISOLATIONS,
        default=None,
        help="madengine: the containers madengine gives models (host network and IPC, root, ptrace and admin "
        "capabilities, unconfined); strict: Docker's defaults plus an 8 GB /dev/shm, for shared CI hosts "
        "(default madengine; ini madengine_isolation)",
    )
    group.addoption(
        "--madengine-tools",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="tools or profilers around every model (repeatable): ours are rocprof, rocprofv3, rpd, rocm-smi "
        "and nsys; their output comes back to <log dir>/<item>/",
    )
    group.addoption(
        "--madengine-tools-file",
        default=None,
        metavar="PATH",
        help="a tools.json of your own (madengine's format; script paths relative to the zoo's root), over ours",
    )
    group.addoption(
        "--madengine-live-output",
        action="store_true",
        default=False,
        help="stream each model's output to the terminal as it runs (without xdist; -s does too)",
    )
    group.addoption(
        "--madengine-reap",
        action="store_true",
        default=False,
        help="remove containers left by earlier runs whose pytest is gone",
    )


def _add_image_options(group: pytest.OptionGroup) -> None:
    """Building, reusing and publishing images."""
    group.addoption(
        "--madengine-build-only",
        action="store_true",
        default=False,
        help="build every item's image and pass; run nothing (no GPU needed, any arch)",
    )
    group.addoption(
        "--madengine-rebuild", action="store_true", default=False, help="build images afresh, without cache"
    )
    group.addoption(
        "--madengine-manifest-out", default=None, metavar="PATH", help="write madengine's build_manifest.json"
    )
    group.addoption(
        "--madengine-manifest",
        default=None,
        metavar="PATH",
        help="run with the images of a build manifest instead of building (pulled when missing locally)",
    )
    group.addoption(
        "--madengine-registry",
        default=None,
        metavar="HOST[:PORT]/NAMESPACE",
        help="push each built image there and record registry_image in the manifest",
    )
    group.addoption(
        "--madengine-credential-file",
        default=None,
        metavar="PATH",
        help="madengine's credential.json (default: credential.json in the invocation directory)",
    )


def _add_report_options(group: pytest.OptionGroup) -> None:
    """Baselines and result files."""
    group.addoption(
        "--madengine-baseline",
        default=None,
        metavar="PATH",
        help="an earlier perf.csv (ours or madengine's) or --madengine-json file to compare with",
    )
    group.addoption(
        "--madengine-max-regression",
        default=None,
        metavar="PCT",
        help="fail a model worse than its baseline by more than this, e.g. 5%% (models.json max_regression wins)",
    )
    group.addoption("--madengine-json", default=None, metavar="PATH", help="write every result as JSON")
    group.addoption("--madengine-html", default=None, metavar="PATH", help="write a self-contained HTML report")


def _add_selection_options(group: pytest.OptionGroup) -> None:
    """madengine's additional context and tag selection."""
    group.addoption(
        "--madengine-context",
        default=None,
        metavar="JSON",
        help="madengine's additional context, as JSON or a Python dict literal (wins over the file, key by key)",
    )
    group.addoption(
        "--madengine-context-file", default=None, metavar="PATH", help="madengine's additional context file (JSON)"
    )
    group.addoption(
        "--madengine-tags",
        action="append",
        default=[],
        metavar="TAGS",
        help="select models as `madengine run --tags` does: name, tag, all, scope/x, tag:key=value (repeatable)",
    )


def _add_ini_options(parser: pytest.Parser) -> None:
    parser.addini("madengine_arch", "default for --madengine-arch (comma list)", default="")
    parser.addini("madengine_isolation", "default for --madengine-isolation (madengine or strict)", default="madengine")
    parser.addini(
        "madengine_timeout",
        "limit in seconds for models without their own timeout (0: none)",
        default=str(DEFAULT_TIMEOUT),
    )


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


def _isolation(config: pytest.Config) -> str:
    value = str(config.getoption("madengine_isolation") or config.getini("madengine_isolation") or "madengine")
    if value not in ISOLATIONS:
        raise pytest.UsageError(f"ini madengine_isolation must be one of {', '.join(ISOLATIONS)}, got {value!r}")
    return value


def _timeouts(config: pytest.Config) -> tuple[int | None, int]:
    """(--madengine-timeout or None, the ini default), both checked."""
    timeout_option = config.getoption("madengine_timeout")
    if timeout_option is not None and timeout_option < 0:
        raise pytest.UsageError(f"--madengine-timeout must be >= 0, got {timeout_option}")
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

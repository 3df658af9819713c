"""The command-line and ini options, each in the "madengine" group, in --help order."""

from __future__ import annotations

import pytest

from .engine.run_options import ISOLATIONS
from .settings import DEFAULT_TIMEOUT


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
    _add_slurm_options(group, parser)
    _add_history_options(group, parser)
    _add_ini_options(parser)


SLURM_FIELDS = ("partition", "account", "qos", "reservation", "constraint")


def _add_slurm_options(group: pytest.OptionGroup, parser: pytest.Parser) -> None:
    """Running every item as a SLURM job (each option has an ini mirror `madengine_slurm_<name>`)."""
    group.addoption(
        "--madengine-slurm",
        action="store_true",
        default=None,
        help="run every item as a SLURM job (srun from its worker; SLURM picks nodes and GPUs)",
    )
    for name in SLURM_FIELDS:
        group.addoption(f"--madengine-slurm-{name}", default=None, metavar=name.upper(), help=f"the jobs' --{name}")
        parser.addini(f"madengine_slurm_{name}", f"default for --madengine-slurm-{name}", default="")
    group.addoption(
        "--madengine-slurm-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument passed to srun as it is (repeatable)",
    )
    group.addoption(
        "--madengine-slurm-shared-dir",
        dest="madengine_slurm_shared_dir",
        default=None,
        metavar="DIR",
        help="a directory every node sees: slurm_multi cards run as batch jobs in a copy of scripts/ there",
    )
    parser.addini("madengine_slurm_shared_dir", "default for --madengine-slurm-shared-dir", default="")
    group.addoption(
        "--madengine-slurm-queue-timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="how long an item may wait for resources before it is skipped as 'no resources' (default: no limit)",
    )
    parser.addini("madengine_slurm", "run every item as a SLURM job (true/false)", type="bool", default=False)


def _add_history_options(group: pytest.OptionGroup, parser: pytest.Parser) -> None:
    """The results history (pytest-madengine list|show|compare|trend|import reads it)."""
    group.addoption(
        "--madengine-storage",
        default=None,
        metavar="URL",
        help="the results history: sqlite:///path.db or postgresql://user@host/db "
        "(with --madengine-autosave alone: .madengine/history.db here)",
    )
    parser.addini("madengine_storage", "default for --madengine-storage", default="")
    group.addoption(
        "--madengine-autosave",
        action="store_true",
        default=None,
        help="store this session's results in the history",
    )
    parser.addini("madengine_autosave", "store every session's results (true/false)", type="bool", default=False)
    group.addoption(
        "--madengine-compare",
        default=None,
        metavar="last|RUN_ID|N",
        help="gate each result against the history: the last N (default 5) results of its model, arch and GPU, "
        "the last one, or one run's",
    )
    group.addoption(
        "--madengine-repeat",
        type=int,
        default=1,
        metavar="N",
        help="run each model N times, a fresh container each time; its performance is the median "
        "(every value in the JSON and the history)",
    )
    group.addoption(
        "--madengine-noise-k",
        type=float,
        default=None,
        metavar="K",
        help="a regression goes beyond max(threshold, K x the history's MAD) "
        "(default 3; models.json noise_k per model)",
    )


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
        help="limit for every model's run, overriding models.json; 0 means none, -1 the default",
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
        "--madengine-pull",
        action="store_true",
        default=False,
        help="refresh base images from their registry before building (as madengine's --pull); "
        "an image is rebuilt only when its base changed",
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

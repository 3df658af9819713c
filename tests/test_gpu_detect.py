"""GPU detection against fake hosts: shell scripts that print the vendor tools' real output formats.

A fake host is its bin dir prepended to `hermetic_path` (the host's PATH with every real GPU tool
hidden), so these tests see exactly the fake host's GPUs on a real GPU host too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from zoo import wait_until

from pytest_madengine.gpus.detect import Detection, Gpu, detect_gpus, runtime_version

FAKEHOSTS = Path(__file__).parent / "fakehosts"
PROBE_MARK = "MADENGINE_TEST_PROBE"  # in the env of every probe a test runs, inherited by its children

MI300X_UUID0 = "1fff74a1-0000-1000-808d-57e2c20f59d2"
MI300X_HIP_UUID0 = "GPU-8d1457e2c20f59d2"
H100_UUIDS = ("GPU-3c2e38d1-6a2c-4a31-b44b-9d82a8c80735", "GPU-722d1344-1b6d-4a95-8cb9-1c572eb5ad94")
MI210_UUIDS = ("GPU-5c0f2e9a71b34d08", "GPU-5c0f2e9a71b44f0b", "GPU-5c0f2e9a71b5510e", "GPU-5c0f2e9a71b65311")

# What a warning must say, in general terms (case-insensitive regexes), so rewording it stays green.
TIMED_OUT = r"tim(ed|es|e)[ -]?out|hung|hangs|did not (answer|respond|finish)"
UNREADABLE = r"unparseable|unparsable|unreadable|could not (be )?(parse|read|understand)|malformed|unexpected output"


def exit_status(status: int) -> str:
    return rf"(exit|status|code|fail|return)\w*\D*(?<!\d){status}(?!\d)"


def limit(seconds: float) -> str:
    """The probe timeout as a person reads it: 1.0 s, 1 s, 1s, 1 seconds."""
    text = f"{seconds:g}"
    tail = "0*" if "." in text else r"(\.0+)?"
    return rf"(?<![\d.]){re.escape(text)}{tail}\s*s(ec(ond)?s?)?\b"


def names(warning: str, tool: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", warning) is not None


def warning_about(detection: Detection, tool: str, *facts: str) -> str:
    """The one warning naming `tool`, checked to say each fact (regex); not its exact wording."""
    about = [w for w in detection.warnings if names(w, tool)]
    assert len(about) == 1, f"expected one warning naming {tool}: {detection.warnings}"
    for fact in facts:
        assert re.search(fact, about[0], re.IGNORECASE), f"{fact!r} not said by {about[0]!r}"
    return about[0]


class FakeHosts:
    """Environments for detect_gpus: a fake bin dir before the hermetic PATH, plus a mark that every
    probe (and every child it forks) inherits, so a test can find what a probe left running."""

    def __init__(self, hermetic_path: str) -> None:
        self.hermetic_path = hermetic_path
        self.mark = uuid.uuid4().hex

    def env(self, bin_dir: Path) -> dict[str, str]:
        return {"PATH": f"{bin_dir}{os.pathsep}{self.hermetic_path}", PROBE_MARK: self.mark}

    def host(self, name: str) -> dict[str, str]:
        return self.env(FAKEHOSTS / name / "bin")

    def survivors(self) -> list[int]:
        """Live processes started by this test's probes (a zombie's environ reads empty)."""
        needle = f"{PROBE_MARK}={self.mark}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(int(entry.name))
        return found


@pytest.fixture
def hosts(hermetic_path: str) -> Iterator[FakeHosts]:
    fake = FakeHosts(hermetic_path)
    yield fake
    for pid in fake.survivors():  # whatever a broken detector left behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def link_tools(bin_dir: Path, host: str, *tools: str) -> Path:
    """A bin dir holding only some of a fake host's tools."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        (bin_dir / tool).symlink_to(FAKEHOSTS / host / "bin" / tool)
    return bin_dir


def write_tool(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def spy_tool(bin_dir: Path, host: str, tool: str, calls: Path) -> None:
    """The fake host's tool, logging each run (one line) to `calls` first."""
    write_tool(bin_dir, tool, f'echo "$*" >> "{calls}"\nexec "{FAKEHOSTS / host / "bin" / tool}" "$@"\n')


def calls_of(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


# --------------------------------------------------------------------------- the fake hosts


def test_mi300x_8_uses_amd_smi_for_ids_render_nodes_and_names(hosts: FakeHosts) -> None:
    detection = detect_gpus(hosts.host("mi300x_8"), timeout=10)

    assert detection.warnings == ()
    assert len(detection.gpus) == 8
    assert detection.vendor == "AMD"
    assert detection.archs == ("gfx942",)
    assert [g.index for g in detection.gpus] == list(range(8))
    assert {g.product_name for g in detection.gpus} == {"AMD Instinct MI300X"}
    # From `amd-smi list -e`: SPX-mode MI300X render minors step by 8, so these are not the fallback.
    assert [g.render_node for g in detection.gpus] == [f"/dev/dri/renderD{128 + 8 * i}" for i in range(8)]
    assert detection.gpus[0].uuid == MI300X_UUID0  # amd-smi's UUID, not rocminfo's
    assert len({g.uuid for g in detection.gpus}) == 8
    assert detection.driver_version == "6.3.1"
    assert detection.header_line() == "madengine GPUs: 8 x AMD gfx942 (AMD Instinct MI300X)"


def test_h100_2(hosts: FakeHosts) -> None:
    detection = detect_gpus(hosts.host("h100_2"), timeout=10)

    assert detection.warnings == ()
    assert detection.vendor == "NVIDIA"
    assert detection.archs == ("sm_90",)
    assert detection.gpus == (
        Gpu(0, "NVIDIA", "sm_90", "NVIDIA H100 80GB HBM3", uuid=H100_UUIDS[0]),
        Gpu(1, "NVIDIA", "sm_90", "NVIDIA H100 80GB HBM3", uuid=H100_UUIDS[1]),
    )
    assert detection.driver_version == "550.54.15"
    assert detection.header_line() == "madengine GPUs: 2 x NVIDIA sm_90 (NVIDIA H100 80GB HBM3)"


def test_the_runtime_version_is_cuda_from_nvidia_smi_and_hip_from_detection(hosts: FakeHosts) -> None:
    nvidia = hosts.host("h100_2")
    assert runtime_version(detect_gpus(nvidia, timeout=10), nvidia, timeout=10) == "12.4"
    amd = hosts.host("mi300x_8")
    detected = detect_gpus(amd, timeout=10)
    assert detected.hip_version and runtime_version(detected, amd, timeout=10) == detected.hip_version
    none = hosts.host("none")
    assert runtime_version(detect_gpus(none, timeout=10), none, timeout=10) == ""


def test_h100_fake_list_agrees_with_the_query(hosts: FakeHosts) -> None:
    """`nvidia-smi -L` on the fake host prints the real line format, with the same GPUs."""
    out = subprocess.run(
        [str(FAKEHOSTS / "h100_2" / "bin" / "nvidia-smi"), "-L"], capture_output=True, text=True, check=True
    ).stdout
    listed = [re.fullmatch(r"GPU (\d+): (.+) \(UUID: (GPU-[0-9a-f-]{36})\)", line) for line in out.splitlines()]
    assert len(listed) == 2 and all(listed), out
    detected = detect_gpus(hosts.host("h100_2"), timeout=10).gpus
    assert [(int(m.group(1)), m.group(2), m.group(3)) for m in listed if m] == [
        (g.index, g.product_name, g.uuid) for g in detected
    ]


def test_amd_hang_kills_the_hung_probe_and_returns_rocminfo_gpus(tmp_path: Path, hosts: FakeHosts) -> None:
    """amd_hang's amd-smi never answers: it is cut at the timeout, asked once only, nothing of it
    survives, and rocminfo's GPUs come back with a warning naming amd-smi and the limit."""
    calls = tmp_path / "amd-smi.calls"
    bin_dir = link_tools(tmp_path / "bin", "amd_hang", "rocminfo", "rocm-smi")
    spy_tool(bin_dir, "amd_hang", "amd-smi", calls)
    # 3 s: the healthy tools beside it must answer within the same limit on a loaded machine.
    detection = detect_gpus(hosts.env(bin_dir), timeout=3.0)

    wait_until(lambda: not hosts.survivors(), 30, "the hung amd-smi and its child are killed")
    assert len(calls_of(calls)) == 1, calls_of(calls)  # a wedged tool costs one timeout, not one per query
    warning_about(detection, "amd-smi", TIMED_OUT, limit(3.0))
    assert len(detection.warnings) == 1
    assert len(detection.gpus) == 4
    assert detection.vendor == "AMD"
    assert detection.archs == ("gfx90a",)
    assert {g.product_name for g in detection.gpus} == {"AMD Instinct MI210"}
    assert tuple(g.uuid for g in detection.gpus) == MI210_UUIDS  # rocminfo's Uuid lines
    assert [g.render_node for g in detection.gpus] == [f"/dev/dri/renderD{128 + i}" for i in range(4)]
    assert detection.driver_version == ""
    assert detection.header_line() == "madengine GPUs: 4 x AMD gfx90a (AMD Instinct MI210)"


def test_none_host(hosts: FakeHosts) -> None:
    detection = detect_gpus(hosts.host("none"), timeout=10)

    assert detection == Detection(gpus=(), warnings=(), driver_version="")
    assert detection.vendor is None
    assert detection.archs == ()
    assert detection.header_line() == "madengine GPUs: none detected"


def test_amd_broken_gives_warnings_not_gpus(hosts: FakeHosts) -> None:
    detection = detect_gpus(hosts.host("amd_broken"), timeout=10)

    assert detection.gpus == ()
    assert detection.vendor is None
    assert len(detection.warnings) == 2
    # amd-smi's failure, with what the tool itself said; rocminfo's output that is no agent listing.
    warning_about(detection, "amd-smi", exit_status(1), "Unable to detect any GPU devices")
    warning_about(detection, "rocminfo", UNREADABLE)
    assert detection.header_line() == "madengine GPUs: none detected"


@pytest.mark.parametrize("host", ["mi300x_8", "h100_2", "amd_hang", "none", "amd_broken"])
def test_dict_round_trip_through_json(host: str, hosts: FakeHosts) -> None:
    detection = detect_gpus(hosts.host(host), timeout=3.0)
    data = json.loads(json.dumps(detection.to_dict()))

    assert Detection.from_dict(data) == detection
    assert data["vendor"] == detection.vendor
    assert tuple(data["archs"]) == detection.archs
    assert len(data["gpus"]) == len(detection.gpus)


# --------------------------------------------------------------------------- degraded AMD hosts


def test_amd_without_amd_smi_falls_back_to_rocminfo(tmp_path: Path, hosts: FakeHosts) -> None:
    bin_dir = link_tools(tmp_path / "bin", "mi300x_8", "rocminfo", "rocm-smi")
    detection = detect_gpus(hosts.env(bin_dir), timeout=10)

    assert detection.warnings == ()  # a missing tool is not a failure
    assert len(detection.gpus) == 8
    assert detection.archs == ("gfx942",)
    assert {g.product_name for g in detection.gpus} == {"AMD Instinct MI300X"}
    assert detection.gpus[0].uuid == MI300X_HIP_UUID0
    assert [g.render_node for g in detection.gpus] == [f"/dev/dri/renderD{128 + i}" for i in range(8)]


def test_amd_with_only_rocm_smi(tmp_path: Path, hosts: FakeHosts) -> None:
    bin_dir = link_tools(tmp_path / "bin", "mi300x_8", "rocm-smi")
    detection = detect_gpus(hosts.env(bin_dir), timeout=10)

    assert detection.warnings == ()
    assert len(detection.gpus) == 8
    assert detection.archs == ("gfx942",)
    assert {g.product_name for g in detection.gpus} == {"AMD Instinct MI300X"}
    assert {g.uuid for g in detection.gpus} == {""}


def test_rocm_smi_decimal_stepping_is_read_as_gfx90a(tmp_path: Path, hosts: FakeHosts) -> None:
    """Older rocm-smi printed gfx9010 for gfx90a."""
    card = {"Card Series": "AMD Instinct MI210", "Card Model": "0x740f", "Node ID": "1", "GFX Version": "gfx9010"}
    write_tool(tmp_path / "bin", "rocm-smi", f"cat <<'EOF'\n{json.dumps({'card0': card})}\nEOF\n")
    detection = detect_gpus(hosts.env(tmp_path / "bin"), timeout=10)

    assert detection.archs == ("gfx90a",)


def test_amd_smi_without_enumeration_flag_degrades_quietly(tmp_path: Path, hosts: FakeHosts) -> None:
    """amd-smi before ROCm 6.4 rejects `list -e`: indices and UUIDs still come from amd-smi."""
    real = FAKEHOSTS / "mi300x_8" / "bin" / "amd-smi"
    write_tool(
        tmp_path / "bin",
        "amd-smi",
        'case " $* " in\n'
        '  *" -e "*) echo "amd-smi list: error: unrecognized arguments: -e" >&2; exit 2 ;;\n'
        "esac\n"
        f'exec "{real}" "$@"\n',
    )
    link_tools(tmp_path / "bin", "mi300x_8", "rocminfo")
    detection = detect_gpus(hosts.env(tmp_path / "bin"), timeout=10)

    assert detection.warnings == ()
    assert len(detection.gpus) == 8
    assert detection.gpus[0].uuid == MI300X_UUID0
    assert [g.render_node for g in detection.gpus] == [f"/dev/dri/renderD{128 + i}" for i in range(8)]


ROCMINFO_TWO_GPUS = """ROCk module is loaded
==========
HSA Agents
==========
*******
Agent 1
*******
  Name:                    AMD EPYC 7763 64-Core Processor
  Uuid:                    CPU-XX
  Marketing Name:          AMD EPYC 7763 64-Core Processor
  Node:                    0
  Device Type:             CPU
*******
Agent 2
*******
  Name:                    gfx90a
  Uuid:                    GPU-aaaaaaaaaaaaaaaa
  Marketing Name:          AMD Instinct MI210
  Node:                    2
  Device Type:             GPU
  ISA Info:
    ISA 1
      Name:                    amdgcn-amd-amdhsa--gfx90a:sramecc+:xnack-
*******
Agent 3
*******
  Name:                    gfx942
  Uuid:                    GPU-bbbbbbbbbbbbbbbb
  Marketing Name:          AMD Instinct MI300X
  Node:                    3
  Device Type:             GPU
  ISA Info:
    ISA 1
      Name:                    amdgcn-amd-amdhsa--gfx942:sramecc+:xnack-
*** Done ***
"""


def test_amd_smi_and_rocminfo_are_matched_by_kfd_node_not_position(tmp_path: Path, hosts: FakeHosts) -> None:
    """amd-smi may number GPUs in another order than rocminfo lists them; node_id ties them together.

    Here amd-smi static has no gfx target (as before ROCm 6.2) and no market name, and wraps its
    list the ROCm 7 way, so both come from rocminfo.
    """
    listing = [
        {"gpu": 0, "bdf": "0000:c1:00.0", "uuid": "u-0", "kfd_id": 1, "node_id": 3, "partition_id": 0},
        {"gpu": 1, "bdf": "0000:41:00.0", "uuid": "u-1", "kfd_id": 2, "node_id": 2, "partition_id": 0},
    ]
    static = {"gpu_data": [{"gpu": i, "asic": {"market_name": "N/A", "device_id": "0x74a1"}} for i in (0, 1)]}
    write_tool(
        tmp_path / "bin",
        "amd-smi",
        'case "$*" in\n'
        f"  'list --json') cat <<'EOF'\n{json.dumps(listing)}\nEOF\n  ;;\n"
        f"  'static --asic --json') cat <<'EOF'\n{json.dumps(static)}\nEOF\n  ;;\n"
        '  *) echo "unsupported: $*" >&2; exit 2 ;;\n'
        "esac\n",
    )
    write_tool(tmp_path / "bin", "rocminfo", f"cat <<'EOF'\n{ROCMINFO_TWO_GPUS}EOF\n")
    detection = detect_gpus(hosts.env(tmp_path / "bin"), timeout=10)

    assert [(g.index, g.arch, g.product_name, g.uuid) for g in detection.gpus] == [
        (0, "gfx942", "AMD Instinct MI300X", "u-0"),
        (1, "gfx90a", "AMD Instinct MI210", "u-1"),
    ]
    assert detection.archs == ("gfx942", "gfx90a")
    # Only `amd-smi version` is refused here: one warning, naming amd-smi, with the tool's own message.
    assert len(detection.warnings) == 1
    warning_about(detection, "amd-smi", exit_status(2), "unsupported: version --json")
    assert detection.header_line() == (
        "madengine GPUs: 1 x AMD gfx942 (AMD Instinct MI300X), 1 x AMD gfx90a (AMD Instinct MI210)"
    )


def test_hang_kills_every_process_of_the_probe(tmp_path: Path, hosts: FakeHosts) -> None:
    """A child of the hanging tool must not outlive the probe (nor keep the pipes open)."""
    pid_file = tmp_path / "child.pid"
    write_tool(tmp_path / "bin", "amd-smi", f"trap '' TERM\nsleep 600 &\necho $! > '{pid_file}'\nwait\n")
    done: list[Detection] = []
    probe = threading.Thread(target=lambda: done.append(detect_gpus(hosts.env(tmp_path / "bin"), timeout=5.0)))
    probe.start()
    try:
        # While the probe hangs: its child is running and carries the mark (so survivors() can see it).
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "the hanging tool forks")
        child = int(pid_file.read_text())
        assert child in hosts.survivors()
    finally:
        probe.join(timeout=60)
    assert not probe.is_alive(), "detection did not return after its probe's limit"
    (detection,) = done
    wait_until(lambda: not hosts.survivors(), 30, "the hung tool's child is killed with it")
    warning_about(detection, "amd-smi", TIMED_OUT, limit(5.0))
    assert detection.gpus == ()


# --------------------------------------------------------------------------- NVIDIA edge cases


def test_nvidia_wins_and_amd_tools_are_not_asked(tmp_path: Path, hosts: FakeHosts) -> None:
    asked = tmp_path / "amd-tools-asked"
    bin_dir = link_tools(tmp_path / "bin", "h100_2", "nvidia-smi")
    for tool in ("amd-smi", "rocminfo", "rocm-smi"):  # each would leave its name in `asked` if run
        write_tool(bin_dir, tool, f'echo "{tool} $*" >> "{asked}"\nexit 1\n')
    detection = detect_gpus(hosts.env(bin_dir), timeout=10)

    assert not asked.exists(), asked.read_text()
    assert detection.vendor == "NVIDIA"
    assert len(detection.gpus) == 2
    assert detection.warnings == ()


def test_nvidia_driver_without_compute_cap_field(tmp_path: Path, hosts: FakeHosts) -> None:
    real = FAKEHOSTS / "h100_2" / "bin" / "nvidia-smi"
    write_tool(
        tmp_path / "bin",
        "nvidia-smi",
        'case "$*" in\n'
        "  *compute_cap*) echo 'Field \"compute_cap\" is not a valid field to query.'; exit 2 ;;\n"
        "esac\n"
        f'exec "{real}" "$@"\n',
    )
    detection = detect_gpus(hosts.env(tmp_path / "bin"), timeout=10)

    assert detection.warnings == ()
    assert [(g.index, g.arch, g.uuid) for g in detection.gpus] == [(0, "", H100_UUIDS[0]), (1, "", H100_UUIDS[1])]
    assert detection.archs == ()
    assert detection.driver_version == "550.54.15"
    assert detection.header_line() == "madengine GPUs: 2 x NVIDIA unknown-arch (NVIDIA H100 80GB HBM3)"


def test_nvidia_smi_without_driver_warns(tmp_path: Path, hosts: FakeHosts) -> None:
    write_tool(
        tmp_path / "bin",
        "nvidia-smi",
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\nexit 9\n',
    )
    detection = detect_gpus(hosts.env(tmp_path / "bin"), timeout=10)

    assert detection.gpus == ()
    assert len(detection.warnings) == 1
    warning_about(detection, "nvidia-smi", exit_status(9), "couldn't communicate with the NVIDIA driver")


def test_nvidia_smi_garbage_warns(tmp_path: Path, hosts: FakeHosts) -> None:
    write_tool(tmp_path / "bin", "nvidia-smi", "echo 'Segmentation fault (core dumped) maybe'\n")
    detection = detect_gpus(hosts.env(tmp_path / "bin"), timeout=10)

    assert detection.gpus == ()
    assert len(detection.warnings) == 1
    # Names nvidia-smi, says its output could not be read, and shows what it printed.
    warning_about(detection, "nvidia-smi", UNREADABLE, "Segmentation fault")


def test_compute_capability_becomes_sm_arch(tmp_path: Path, hosts: FakeHosts) -> None:
    rows = "0, NVIDIA B200, GPU-1, 10.0, 570.86.15\n1, NVIDIA A100-SXM4-80GB, GPU-2, 8.0, 570.86.15\n"
    write_tool(tmp_path / "bin", "nvidia-smi", f"cat <<'EOF'\n{rows}EOF\n")
    detection = detect_gpus(hosts.env(tmp_path / "bin"), timeout=10)

    assert [g.arch for g in detection.gpus] == ["sm_100", "sm_80"]
    assert detection.archs == ("sm_100", "sm_80")


# --------------------------------------------------------------------------- env handling


def test_default_env_is_os_environ(monkeypatch: pytest.MonkeyPatch, hosts: FakeHosts) -> None:
    monkeypatch.setenv("PATH", hosts.host("h100_2")["PATH"])
    assert detect_gpus(timeout=10).vendor == "NVIDIA"


def test_env_without_path_finds_no_tools(monkeypatch: pytest.MonkeyPatch, hosts: FakeHosts) -> None:
    monkeypatch.setenv("PATH", hosts.host("h100_2")["PATH"])  # must not be used when env is given
    assert detect_gpus({}, timeout=10) == Detection(gpus=(), warnings=())


# --------------------------------------------------------------------------- Detection itself


def test_archs_follow_index_order_and_skip_unknown() -> None:
    detection = Detection(
        gpus=(
            Gpu(2, "AMD", "gfx90a", "AMD Instinct MI210"),
            Gpu(0, "AMD", "gfx942", "AMD Instinct MI300X"),
            Gpu(1, "AMD", "", ""),
            Gpu(3, "AMD", "gfx942", "AMD Instinct MI300X"),
        ),
        warnings=(),
    )
    assert detection.archs == ("gfx942", "gfx90a")
    assert detection.header_line() == (
        "madengine GPUs: 2 x AMD gfx942 (AMD Instinct MI300X), 1 x AMD unknown-arch, "
        "1 x AMD gfx90a (AMD Instinct MI210)"
    )


@pytest.mark.parametrize(
    "data",
    [
        {"gpus": "none", "warnings": []},
        {"gpus": [], "warnings": "x"},
        {"gpus": [{"index": "0", "vendor": "AMD", "arch": "gfx942", "product_name": "x"}], "warnings": []},
        {"gpus": [{"index": 0, "vendor": None}], "warnings": []},
        {"gpus": [], "warnings": [], "driver_version": 1},
    ],
)
def test_from_dict_rejects_malformed_data(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Detection.from_dict(data)


def test_from_dict_fills_optional_fields() -> None:
    data = {"gpus": [{"index": 0, "vendor": "NVIDIA", "arch": "sm_90", "product_name": "H100"}], "warnings": []}
    assert Detection.from_dict(data) == Detection(gpus=(Gpu(0, "NVIDIA", "sm_90", "H100"),), warnings=())

"""GPU detection against fake hosts: shell scripts that print the vendor tools' real output formats."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pytest_madengine.gpu_detect import Detection, Gpu, detect_gpus

FAKEHOSTS = Path(__file__).parent / "fakehosts"
SYSTEM_PATH = "/usr/bin:/bin"
VENDOR_TOOLS = ("amd-smi", "rocminfo", "rocm-smi", "nvidia-smi")

MI300X_UUID0 = "1fff74a1-0000-1000-808d-57e2c20f59d2"
MI300X_HIP_UUID0 = "GPU-8d1457e2c20f59d2"
H100_UUIDS = ("GPU-3c2e38d1-6a2c-4a31-b44b-9d82a8c80735", "GPU-722d1344-1b6d-4a95-8cb9-1c572eb5ad94")
MI210_UUIDS = ("GPU-5c0f2e9a71b34d08", "GPU-5c0f2e9a71b44f0b", "GPU-5c0f2e9a71b5510e", "GPU-5c0f2e9a71b65311")


@pytest.fixture(autouse=True)
def _system_has_no_vendor_tools() -> None:
    """The fake hosts put /usr/bin and /bin after their bin dir; a real tool there would leak in."""
    real = [tool for tool in VENDOR_TOOLS if shutil.which(tool, path=SYSTEM_PATH)]
    if real:
        pytest.skip(f"this machine has real GPU tools in {SYSTEM_PATH}: {real}")


def env_for(bin_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}:{SYSTEM_PATH}"}


def host_env(host: str) -> dict[str, str]:
    return env_for(FAKEHOSTS / host / "bin")


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


# --------------------------------------------------------------------------- the fake hosts


def test_mi300x_8_uses_amd_smi_for_ids_render_nodes_and_names() -> None:
    detection = detect_gpus(host_env("mi300x_8"), timeout=10)

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


def test_h100_2() -> None:
    detection = detect_gpus(host_env("h100_2"), timeout=10)

    assert detection.warnings == ()
    assert detection.vendor == "NVIDIA"
    assert detection.archs == ("sm_90",)
    assert detection.gpus == (
        Gpu(0, "NVIDIA", "sm_90", "NVIDIA H100 80GB HBM3", uuid=H100_UUIDS[0]),
        Gpu(1, "NVIDIA", "sm_90", "NVIDIA H100 80GB HBM3", uuid=H100_UUIDS[1]),
    )
    assert detection.driver_version == "550.54.15"
    assert detection.header_line() == "madengine GPUs: 2 x NVIDIA sm_90 (NVIDIA H100 80GB HBM3)"


def test_h100_fake_list_agrees_with_the_query() -> None:
    """`nvidia-smi -L` on the fake host prints the real line format, with the same GPUs."""
    out = subprocess.run(
        [str(FAKEHOSTS / "h100_2" / "bin" / "nvidia-smi"), "-L"], capture_output=True, text=True, check=True
    ).stdout
    listed = [re.fullmatch(r"GPU (\d+): (.+) \(UUID: (GPU-[0-9a-f-]{36})\)", line) for line in out.splitlines()]
    assert all(listed)
    detected = detect_gpus(host_env("h100_2"), timeout=10).gpus
    assert [(int(m.group(1)), m.group(2), m.group(3)) for m in listed if m] == [
        (g.index, g.product_name, g.uuid) for g in detected
    ]


def test_amd_hang_returns_on_time_with_rocminfo_gpus() -> None:
    timeout = 1.0
    start = time.monotonic()
    detection = detect_gpus(host_env("amd_hang"), timeout=timeout)
    elapsed = time.monotonic() - start

    assert elapsed < timeout + 2
    assert elapsed >= timeout  # amd-smi really was waited for, and cut off
    assert len(detection.warnings) == 1
    assert detection.warnings[0].startswith("amd-smi timed out after 1.0 s")
    assert len(detection.gpus) == 4
    assert detection.vendor == "AMD"
    assert detection.archs == ("gfx90a",)
    assert {g.product_name for g in detection.gpus} == {"AMD Instinct MI210"}
    assert tuple(g.uuid for g in detection.gpus) == MI210_UUIDS  # rocminfo's Uuid lines
    assert [g.render_node for g in detection.gpus] == [f"/dev/dri/renderD{128 + i}" for i in range(4)]
    assert detection.driver_version == ""
    assert detection.header_line() == "madengine GPUs: 4 x AMD gfx90a (AMD Instinct MI210)"


def test_none_host() -> None:
    detection = detect_gpus(host_env("none"), timeout=10)

    assert detection == Detection(gpus=(), warnings=(), driver_version="")
    assert detection.vendor is None
    assert detection.archs == ()
    assert detection.header_line() == "madengine GPUs: none detected"


def test_amd_broken_gives_warnings_not_gpus() -> None:
    detection = detect_gpus(host_env("amd_broken"), timeout=10)

    assert detection.gpus == ()
    assert detection.vendor is None
    assert len(detection.warnings) == 2
    amd_smi, rocminfo = detection.warnings
    assert amd_smi.startswith("amd-smi exited with status 1")
    assert "Unable to detect any GPU devices" in amd_smi
    assert rocminfo.startswith("rocminfo printed unparseable output")
    assert detection.header_line() == "madengine GPUs: none detected"


@pytest.mark.parametrize("host", ["mi300x_8", "h100_2", "amd_hang", "none", "amd_broken"])
def test_dict_round_trip_through_json(host: str) -> None:
    detection = detect_gpus(host_env(host), timeout=1.0)
    data = json.loads(json.dumps(detection.to_dict()))

    assert Detection.from_dict(data) == detection
    assert data["vendor"] == detection.vendor
    assert tuple(data["archs"]) == detection.archs
    assert len(data["gpus"]) == len(detection.gpus)


# --------------------------------------------------------------------------- degraded AMD hosts


def test_amd_without_amd_smi_falls_back_to_rocminfo(tmp_path: Path) -> None:
    bin_dir = link_tools(tmp_path / "bin", "mi300x_8", "rocminfo", "rocm-smi")
    detection = detect_gpus(env_for(bin_dir), timeout=10)

    assert detection.warnings == ()  # a missing tool is not a failure
    assert len(detection.gpus) == 8
    assert detection.archs == ("gfx942",)
    assert {g.product_name for g in detection.gpus} == {"AMD Instinct MI300X"}
    assert detection.gpus[0].uuid == MI300X_HIP_UUID0
    assert [g.render_node for g in detection.gpus] == [f"/dev/dri/renderD{128 + i}" for i in range(8)]


def test_amd_with_only_rocm_smi(tmp_path: Path) -> None:
    bin_dir = link_tools(tmp_path / "bin", "mi300x_8", "rocm-smi")
    detection = detect_gpus(env_for(bin_dir), timeout=10)

    assert detection.warnings == ()
    assert len(detection.gpus) == 8
    assert detection.archs == ("gfx942",)
    assert {g.product_name for g in detection.gpus} == {"AMD Instinct MI300X"}
    assert {g.uuid for g in detection.gpus} == {""}


def test_rocm_smi_decimal_stepping_is_read_as_gfx90a(tmp_path: Path) -> None:
    """Older rocm-smi printed gfx9010 for gfx90a."""
    card = {"Card Series": "AMD Instinct MI210", "Card Model": "0x740f", "Node ID": "1", "GFX Version": "gfx9010"}
    write_tool(tmp_path / "bin", "rocm-smi", f"cat <<'EOF'\n{json.dumps({'card0': card})}\nEOF\n")
    detection = detect_gpus(env_for(tmp_path / "bin"), timeout=10)

    assert detection.archs == ("gfx90a",)


def test_amd_smi_without_enumeration_flag_degrades_quietly(tmp_path: Path) -> None:
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
    detection = detect_gpus(env_for(tmp_path / "bin"), timeout=10)

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


def test_amd_smi_and_rocminfo_are_matched_by_kfd_node_not_position(tmp_path: Path) -> None:
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
    detection = detect_gpus(env_for(tmp_path / "bin"), timeout=10)

    assert [(g.index, g.arch, g.product_name, g.uuid) for g in detection.gpus] == [
        (0, "gfx942", "AMD Instinct MI300X", "u-0"),
        (1, "gfx90a", "AMD Instinct MI210", "u-1"),
    ]
    assert detection.archs == ("gfx942", "gfx90a")
    assert detection.warnings == ("amd-smi exited with status 2 (amd-smi version --json): unsupported: version --json",)
    assert detection.header_line() == (
        "madengine GPUs: 1 x AMD gfx942 (AMD Instinct MI300X), 1 x AMD gfx90a (AMD Instinct MI210)"
    )


def test_hang_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A child of the hanging tool must not outlive the probe (nor keep the pipes open)."""
    pid_file = tmp_path / "child.pid"
    write_tool(tmp_path / "bin", "amd-smi", f"trap '' TERM\nsleep 600 &\necho $! > '{pid_file}'\nwait\n")
    start = time.monotonic()
    detection = detect_gpus(env_for(tmp_path / "bin"), timeout=0.5)

    assert time.monotonic() - start < 0.5 + 2
    assert detection.warnings[0].startswith("amd-smi timed out after 0.5 s")
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running and not a zombie (a killed orphan may wait a moment for init to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --------------------------------------------------------------------------- NVIDIA edge cases


def test_nvidia_wins_and_amd_tools_are_not_asked(tmp_path: Path) -> None:
    bin_dir = link_tools(tmp_path / "bin", "h100_2", "nvidia-smi")
    link_tools(bin_dir, "amd_hang", "amd-smi", "rocminfo")  # amd-smi would cost the full timeout
    start = time.monotonic()
    detection = detect_gpus(env_for(bin_dir), timeout=3)

    assert time.monotonic() - start < 3
    assert detection.vendor == "NVIDIA"
    assert len(detection.gpus) == 2
    assert detection.warnings == ()


def test_nvidia_driver_without_compute_cap_field(tmp_path: Path) -> None:
    real = FAKEHOSTS / "h100_2" / "bin" / "nvidia-smi"
    write_tool(
        tmp_path / "bin",
        "nvidia-smi",
        'case "$*" in\n'
        "  *compute_cap*) echo 'Field \"compute_cap\" is not a valid field to query.'; exit 2 ;;\n"
        "esac\n"
        f'exec "{real}" "$@"\n',
    )
    detection = detect_gpus(env_for(tmp_path / "bin"), timeout=10)

    assert detection.warnings == ()
    assert [(g.index, g.arch, g.uuid) for g in detection.gpus] == [(0, "", H100_UUIDS[0]), (1, "", H100_UUIDS[1])]
    assert detection.archs == ()
    assert detection.driver_version == "550.54.15"
    assert detection.header_line() == "madengine GPUs: 2 x NVIDIA unknown-arch (NVIDIA H100 80GB HBM3)"


def test_nvidia_smi_without_driver_warns(tmp_path: Path) -> None:
    write_tool(
        tmp_path / "bin",
        "nvidia-smi",
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\nexit 9\n',
    )
    detection = detect_gpus(env_for(tmp_path / "bin"), timeout=10)

    assert detection.gpus == ()
    assert len(detection.warnings) == 1
    assert detection.warnings[0].startswith("nvidia-smi exited with status 9")
    assert "couldn't communicate with the NVIDIA driver" in detection.warnings[0]


def test_nvidia_smi_garbage_warns(tmp_path: Path) -> None:
    write_tool(tmp_path / "bin", "nvidia-smi", "echo 'Segmentation fault (core dumped) maybe'\n")
    detection = detect_gpus(env_for(tmp_path / "bin"), timeout=10)

    assert detection.gpus == ()
    assert detection.warnings == (
        "nvidia-smi printed unparseable output (nvidia-smi "
        "--query-gpu=index,name,uuid,compute_cap,driver_version --format=csv,noheader,nounits): "
        "'Segmentation fault (core dumped) maybe'",
    )


def test_compute_capability_becomes_sm_arch(tmp_path: Path) -> None:
    rows = "0, NVIDIA B200, GPU-1, 10.0, 570.86.15\n1, NVIDIA A100-SXM4-80GB, GPU-2, 8.0, 570.86.15\n"
    write_tool(tmp_path / "bin", "nvidia-smi", f"cat <<'EOF'\n{rows}EOF\n")
    detection = detect_gpus(env_for(tmp_path / "bin"), timeout=10)

    assert [g.arch for g in detection.gpus] == ["sm_100", "sm_80"]
    assert detection.archs == ("sm_100", "sm_80")


# --------------------------------------------------------------------------- env handling


def test_default_env_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", host_env("h100_2")["PATH"])
    assert detect_gpus(timeout=10).vendor == "NVIDIA"


def test_env_without_path_finds_no_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", host_env("h100_2")["PATH"])  # must not be used when env is given
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

"""GPU detection for AMD and NVIDIA hosts by asking the vendor tools found on PATH.

Detection never raises for a broken host: every probe that fails, hangs or prints something we
cannot read becomes a warning naming the tool, and the next tool is tried. NVIDIA wins when
nvidia-smi lists GPUs, as in madengine. On AMD hosts amd-smi is preferred (indices, UUIDs, render
nodes, market names, gfx targets), rocminfo fills in or replaces the gfx names, and rocm-smi is
the fallback when amd-smi is missing or fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from .amd import detect_amd
from .model import AMD, NVIDIA, Detection, Gpu
from .nvidia import cuda_version, detect_nvidia
from .probe import Prober

__all__ = ["AMD", "NVIDIA", "Detection", "Gpu", "detect_gpus", "runtime_version"]


def detect_gpus(env: Mapping[str, str] | None = None, timeout: float = 5.0) -> Detection:
    """Detect the host's GPUs with the vendor tools on env's PATH; each probe is cut at timeout s."""
    prober = Prober(dict(os.environ if env is None else env), timeout)
    nvidia = detect_nvidia(prober)
    if nvidia is not None and nvidia.gpus:
        return Detection(nvidia.gpus, tuple(prober.warnings), nvidia.driver_version)
    amd = detect_amd(prober)
    hip = hip_version(prober, amd.driver_version) if amd.gpus else ""
    return Detection(amd.gpus, tuple(prober.warnings), amd.driver_version, hip)


def runtime_version(detection: Detection, env: Mapping[str, str] | None = None, timeout: float = 5.0) -> str:
    """The GPU runtime's version a result was measured with: HIP's on AMD hosts (known from detection),
    CUDA's on NVIDIA hosts (asked only here, when a run is stored: detection need not pay for it)."""
    if detection.vendor != NVIDIA:
        return detection.hip_version
    return cuda_version(Prober(dict(os.environ if env is None else env), timeout))


def hip_version(prober: Prober, rocm_version: str, info: Path = Path("/opt/rocm/.info/version")) -> str:
    """MAD_SYSTEM_HIP_VERSION, major.minor, from madengine's sources in its order: `hipconfig --version`,
    ROCm's version file, rocminfo's `ROCm Version` line (rocminfo's answer from detection is reused);
    then the ROCm version the SMI reported; "" when none says."""
    if prober.present("hipconfig"):
        result = prober.run("hipconfig", ["--version"])
        if result.ok and (found := major_minor(result.stdout)):
            return found
    try:
        found = major_minor(info.read_text(encoding="utf-8"))
    except OSError:
        found = ""
    if not found and prober.present("rocminfo"):
        result = prober.run("rocminfo", [])
        found = _rocminfo_version(result.stdout) if result.ok else ""
    return found or major_minor(rocm_version)


def _rocminfo_version(text: str) -> str:
    """major.minor from the line madengine greps for (`rocminfo | grep -i 'ROCm Version'`)."""
    match = re.search(r"ROCm Version\s*:?\s*(\d+\.\d+)", text, re.IGNORECASE)
    return major_minor(match.group(1)) if match else ""


def major_minor(text: str) -> str:
    match = re.match(r"\s*(\d+)\.(\d+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else ""

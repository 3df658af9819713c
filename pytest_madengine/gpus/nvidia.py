"""NVIDIA detection: nvidia-smi's CSV query, retried without compute_cap for old drivers."""

from __future__ import annotations

import re

from .model import NVIDIA, Found, Gpu
from .probe import Prober, known

__all__ = ["cuda_version", "detect_nvidia", "parse_nvidia_csv"]


_NVIDIA_QUERY = "index,name,uuid,compute_cap,driver_version"
_NVIDIA_QUERY_OLD = "index,name,uuid,driver_version"  # drivers before compute_cap was queryable


def detect_nvidia(prober: Prober) -> Found | None:
    if not prober.present("nvidia-smi"):
        return None
    args = [f"--query-gpu={_NVIDIA_QUERY}", "--format=csv,noheader,nounits"]
    result = prober.run("nvidia-smi", args)
    with_cc = True
    if not result.ok and not result.timed_out:
        # Old drivers reject the compute_cap field; ask again without it before giving up.
        old_args = [f"--query-gpu={_NVIDIA_QUERY_OLD}", "--format=csv,noheader,nounits"]
        retry = prober.run("nvidia-smi", old_args)
        if retry.ok:
            args, result, with_cc = old_args, retry, False
    if not result.ok:
        prober.warn("nvidia-smi", args, result)
        return None
    found = parse_nvidia_csv(result.stdout, with_cc)
    if found is None:
        prober.warn_unparseable("nvidia-smi", args, result.stdout)
    return found


def cuda_version(prober: Prober) -> str:
    """The CUDA version the driver supports, from the header of plain `nvidia-smi` (no query field
    gives it); "" when the tool is missing or does not say."""
    if not prober.present("nvidia-smi"):
        return ""
    result = prober.run("nvidia-smi", [])
    match = re.search(r"CUDA Version:\s*(\d+\.\d+)", result.stdout) if result.ok else None
    return match.group(1) if match else ""


def parse_nvidia_csv(text: str, with_cc: bool) -> Found | None:
    """Parse `index, name, uuid[, compute_cap], driver_version` rows; None when any row is malformed."""
    gpus: list[Gpu] = []
    drivers: list[str] = []
    tail = 3 if with_cc else 2  # fields after the name, which may itself contain commas
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 2 + tail or not parts[0].isdigit():
            return None
        name = ", ".join(parts[1:-tail])
        uuid = parts[-tail]
        arch = _sm_arch(parts[-2]) if with_cc else ""
        drivers.append(parts[-1])
        gpus.append(Gpu(int(parts[0]), NVIDIA, arch, name, uuid=known(uuid)))
    gpus.sort(key=lambda g: g.index)
    return Found(tuple(gpus), known(drivers[0]) if drivers else "")


def _sm_arch(compute_cap: str) -> str:
    """'9.0' -> 'sm_90', '12.0' -> 'sm_120'; anything else (e.g. '[N/A]') is unknown."""
    match = re.fullmatch(r"(\d+)\.(\d+)", compute_cap)
    return f"sm_{match.group(1)}{match.group(2)}" if match else ""

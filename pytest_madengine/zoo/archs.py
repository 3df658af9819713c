"""GPU architecture names: parsing the option and telling the vendor from a name."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import MadengineError

CPU = "cpu"
AMD = "AMD"
NVIDIA = "NVIDIA"

_AMD_INSTINCT = re.compile(r"^(?:AMD )?(?:INSTINCT )?MI\d{2,3}[A-Z]*$")
_NVIDIA_SHORT = re.compile(r"^(?:[A-Z]{1,2}\d{2,4}[A-Z]*|RTX.*|GH\d+|GB\d+)$")


class ArchError(MadengineError, ValueError):
    """An arch name we cannot map to a vendor."""


def vendor_of(arch: str) -> str | None:
    """AMD for gfx*, NVIDIA for sm_* and NVIDIA product names, None for cpu."""
    if arch == CPU:
        return None
    if re.fullmatch(r"gfx[0-9a-f]+", arch, flags=re.IGNORECASE):
        return AMD
    if re.fullmatch(r"sm_?\d+[a-z]?", arch, flags=re.IGNORECASE):
        return NVIDIA
    if _AMD_INSTINCT.match(arch.upper()):
        return AMD  # MI300X, MI250: AMD names that NVIDIA's short-name pattern would take
    if "NVIDIA" in arch.upper() or _NVIDIA_SHORT.match(arch.upper()):
        return NVIDIA
    raise ArchError(
        f"unknown GPU architecture {arch!r}: expected gfx* or an AMD Instinct name (MI300X), "
        "sm_* or an NVIDIA name (A100, H100), or 'cpu'"
    )


def parse_arch_list(values: Iterable[str]) -> list[str]:
    """Split repeated comma lists, drop blanks and duplicates, keep order; validate each."""
    archs: list[str] = []
    for value in values:
        for part in value.replace(" ", ",").split(","):
            part = part.strip()
            if part and part not in archs:
                vendor_of(part)
                archs.append(part)
    return archs


def skipped_arch(skip_list: tuple[str, ...], arch: str, product_name: str = "") -> str | None:
    """The skip_gpu_arch entry that names this arch (or the NVIDIA product, 'H100' for
    'NVIDIA H100 80GB HBM3', as madengine normalises it), else None."""
    names = {arch.lower()}
    if product_name.upper().startswith("NVIDIA "):
        names.add(re.split(r"[-\s]", product_name[len("NVIDIA ") :].strip())[0].lower())
    for entry in skip_list:
        if entry.strip().lower() in names:
            return entry.strip()
    return None

"""What GPU detection found: the GPUs, the warnings, and the dict form that crosses processes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["AMD", "NVIDIA", "Detection", "Found", "Gpu"]


AMD = "AMD"
NVIDIA = "NVIDIA"


@dataclass(frozen=True)
class Gpu:
    """One GPU as the host's vendor tool numbers it."""

    index: int
    vendor: str
    arch: str
    product_name: str
    uuid: str = ""
    render_node: str = ""


@dataclass(frozen=True)
class Detection:
    """What detect_gpus found, plus why it may have found less than the host has."""

    gpus: tuple[Gpu, ...]
    warnings: tuple[str, ...]
    driver_version: str = ""
    hip_version: str = ""  # major.minor on AMD hosts

    @property
    def vendor(self) -> str | None:
        """The vendor of the GPUs; a host is treated as single-vendor, as madengine does."""
        return self.gpus[0].vendor if self.gpus else None

    @property
    def archs(self) -> tuple[str, ...]:
        """Distinct known archs in index order; unknown ("") archs are left out."""
        seen: list[str] = []
        for gpu in sorted(self.gpus, key=lambda g: g.index):
            if gpu.arch and gpu.arch not in seen:
                seen.append(gpu.arch)
        return tuple(seen)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form; vendor and archs are included for readers and ignored by from_dict."""
        return {
            "gpus": [_gpu_to_dict(gpu) for gpu in self.gpus],
            "warnings": list(self.warnings),
            "driver_version": self.driver_version,
            "hip_version": self.hip_version,
            "vendor": self.vendor,
            "archs": list(self.archs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Detection:
        """Rebuild from to_dict output (e.g. a detection recorded by another process)."""
        gpus_raw = data.get("gpus", [])
        warnings_raw = data.get("warnings", [])
        if not isinstance(gpus_raw, list) or not isinstance(warnings_raw, list):
            raise ValueError("detection data needs 'gpus' and 'warnings' lists")
        gpus = tuple(_gpu_from_dict(item) for item in gpus_raw)
        warnings = tuple(_expect_str(w, "warning") for w in warnings_raw)
        driver = _expect_str(data.get("driver_version", ""), "driver_version")
        hip = _expect_str(data.get("hip_version", ""), "hip_version")
        return cls(gpus=gpus, warnings=warnings, driver_version=driver, hip_version=hip)

    def header_line(self) -> str:
        """One line for the pytest header, grouping identical GPUs so 8 GPUs don't take 8 lines."""
        if not self.gpus:
            return "madengine GPUs: none detected"
        groups: dict[tuple[str, str, str], int] = {}
        for gpu in sorted(self.gpus, key=lambda g: g.index):
            key = (gpu.vendor, gpu.arch or "unknown-arch", gpu.product_name)
            groups[key] = groups.get(key, 0) + 1
        parts = []
        for (vendor, arch, name), count in groups.items():
            parts.append(f"{count} x {vendor} {arch}" + (f" ({name})" if name else ""))
        return "madengine GPUs: " + ", ".join(parts)


@dataclass
class Found:
    """What one vendor's tools found; detect_gpus adds the warnings to make a Detection."""

    gpus: tuple[Gpu, ...] = ()
    driver_version: str = ""


def _expect_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _gpu_to_dict(gpu: Gpu) -> dict[str, object]:
    return {
        "index": gpu.index,
        "vendor": gpu.vendor,
        "arch": gpu.arch,
        "product_name": gpu.product_name,
        "uuid": gpu.uuid,
        "render_node": gpu.render_node,
    }


def _gpu_from_dict(item: object) -> Gpu:
    if not isinstance(item, Mapping):
        raise ValueError(f"a GPU entry must be a mapping, not {type(item).__name__}")
    index = item.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"GPU index must be an int, not {index!r}")
    return Gpu(
        index=index,
        vendor=_expect_str(item.get("vendor"), "GPU vendor"),
        arch=_expect_str(item.get("arch", ""), "GPU arch"),
        product_name=_expect_str(item.get("product_name", ""), "GPU product_name"),
        uuid=_expect_str(item.get("uuid", ""), "GPU uuid"),
        render_node=_expect_str(item.get("render_node", ""), "GPU render_node"),
    )

"""The session's GPU pool: the detected GPUs, or the ids the user named."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MadengineError
from .detect import Detection, Gpu
from .lease import Lease


class PoolError(MadengineError, ValueError):
    """A --madengine-gpus value we cannot use; the text says why."""


def parse_gpu_ids(text: str) -> tuple[int, ...]:
    """`0,2-5` → (0, 2, 3, 4, 5); `none` → (); as madengine's docker_gpus, sorted and unique."""
    text = text.strip()
    if text.lower() in ("none", ""):
        return ()
    ids: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if sep else first
        except ValueError:
            raise PoolError(f"'{part}' is not a GPU id or range (use ids and ranges like 0,2-5, or none)") from None
        if first < 0 or last < first:
            raise PoolError(f"'{part}' is not a valid range")
        ids.update(range(first, last + 1))
    return tuple(sorted(ids))


@dataclass(frozen=True)
class Pool:
    ids: tuple[int, ...]
    explicit: bool  # given with --madengine-gpus rather than detected
    detection: Detection

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def has_devices(self) -> bool:
        """Whether leased ids map to real devices we can pass into containers."""
        return bool(self.detection.gpus)

    def gpu(self, index: int) -> Gpu | None:
        return next((g for g in self.detection.gpus if g.index == index), None)

    def product_name(self) -> str:
        gpus = self.detection.gpus
        return gpus[0].product_name if gpus else ""

    def lease(self, ids: tuple[int, ...], arch_vendor: str | None) -> Lease:
        """What a container gets for these ids: devices only when the host's vendor is the arch's."""
        vendor = self.detection.vendor if self.has_devices and arch_vendor == self.detection.vendor else None
        renders = tuple(g.render_node for i in ids if (g := self.gpu(i)) is not None and g.render_node)
        return Lease(
            ids=ids,
            vendor=vendor,
            product_name=self.product_name(),
            system_ngpus=self.size,
            render_nodes=renders if vendor == "AMD" else (),
        )

    def describe(self) -> str:
        source = "--madengine-gpus" if self.explicit else "detected"
        ids = ",".join(str(i) for i in self.ids) or "none"
        line = f"madengine GPU pool: {ids} ({source})"
        if self.explicit and self.ids and not self.has_devices:
            line += "; no GPU devices on this host, so containers get none"
        return line


def make_pool(detection: Detection, option: str | None) -> Pool:
    if option is None:
        return Pool(tuple(g.index for g in detection.gpus), explicit=False, detection=detection)
    ids = parse_gpu_ids(option)
    if detection.gpus:
        known = {g.index for g in detection.gpus}
        unknown = [i for i in ids if i not in known]
        if unknown:
            have = ",".join(str(i) for i in sorted(known))
            raise PoolError(f"GPU {','.join(map(str, unknown))} is not on this host (it has {have})")
    return Pool(ids, explicit=True, detection=detection)

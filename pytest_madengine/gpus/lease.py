"""What a test holds while it runs: a set of host GPUs, and what the container needs of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


def _nothing_to_release() -> None:
    """A lease of no GPUs gives nothing back."""


@dataclass(frozen=True)
class Lease:
    ids: tuple[int, ...]  # host GPU ids, exclusive to the holder while it runs
    vendor: str | None = None  # "AMD", "NVIDIA", or None when no devices can be passed
    product_name: str = ""
    system_ngpus: int = 0
    render_nodes: tuple[str, ...] = ()  # AMD: one /dev/dri/renderD* per leased id
    # Gives the GPUs back to the pool; idempotent, so the run calls it as soon as the model's processes
    # are gone and the fixture again at teardown.
    release: Callable[[], None] = field(default=_nothing_to_release, compare=False, repr=False)

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def ids_text(self) -> str:
        return ",".join(str(i) for i in self.ids)

"""What the cluster has, from `sinfo --json` at session start: GPUs per node (by gres type too), so an
item that no node can hold is skipped with that reason instead of pending forever."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import MadengineError

_GPU = re.compile(r"gpu(?::([A-Za-z0-9_.-]+))?:(\d+)")


class SlurmUnavailable(MadengineError):
    """sinfo cannot be asked: no SLURM client here, or no controller answering."""


@dataclass(frozen=True)
class Capacity:
    gpus: Mapping[str, int] = field(default_factory=dict)  # node name -> GPUs

    @property
    def largest(self) -> int:
        return max(self.gpus.values(), default=0)

    def nodes_with(self, gpus: int) -> int:
        """How many nodes have at least `gpus` GPUs."""
        return sum(1 for count in self.gpus.values() if count >= gpus)

    def to_dict(self) -> dict[str, int]:
        return dict(self.gpus)


def node_gpus(gres: str) -> int:
    """`gpu:4`, `gpu:mi300x:8(S:0-1)`, `gpu:a:2,gpu:b:2` -> the node's GPU count."""
    return sum(int(count) for _, count in _GPU.findall(gres or ""))


def parse_sinfo(data: Mapping[str, Any]) -> Capacity:
    nodes = data.get("nodes") or []
    return Capacity({str(n.get("name", "")): node_gpus(str(n.get("gres", ""))) for n in nodes if isinstance(n, dict)})


def ask_capacity(timeout_s: float = 30.0) -> Capacity:
    try:
        done = subprocess.run(["sinfo", "--json"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmUnavailable(f"cannot ask SLURM for its nodes (sinfo --json): {exc}") from None
    if done.returncode != 0:
        raise SlurmUnavailable(f"sinfo --json failed: {done.stderr.strip() or done.returncode}")
    try:
        data = json.loads(done.stdout)
    except ValueError as exc:
        raise SlurmUnavailable(f"sinfo --json printed no JSON: {exc}") from None
    problems = [str(e.get("error", e)) for e in data.get("errors") or [] if isinstance(e, dict)]
    capacity = parse_sinfo(data)
    if problems or not capacity.gpus:
        why = "; ".join(problems) or done.stderr.strip() or "no nodes"
        raise SlurmUnavailable(f"sinfo --json lists no nodes: {why}")
    return capacity

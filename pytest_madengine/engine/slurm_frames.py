"""What the nodes' runners print on srun's stdout, taken apart: log lines and framed facts and files,
per node. Across nodes srun labels each line with its task (`0: `, `1: `), which is the node's rank."""

from __future__ import annotations

import base64
import io
import re
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .slurm_runner import FRAME

_LABEL = re.compile(r"\s*(\d+): ?")


@dataclass
class NodeReport:
    """One node's runner: where it ran, its log, the files it framed back, how it ended."""

    placement: dict[str, str] = field(default_factory=dict)  # node, job, gpus
    log: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    ending: str = ""  # "exit <code>", "timeout" or "error <why>"
    done: bool = False  # the runner said all it has to say (it still cleans up)
    _receiving: str | None = None
    _chunks: list[str] = field(default_factory=list)

    def take(self, line: str) -> bool:
        """One line of this node's output; True when it belongs to the model's log."""
        if line.startswith(FRAME) and line.rstrip().endswith("==="):
            kind, _, rest = line.strip()[len(FRAME) : -3].partition(" ")
            if kind == "placed":
                self.placement = dict(part.split("=", 1) for part in rest.split() if "=" in part)
            elif kind == "file":
                self._receiving, self._chunks = rest, []
            elif kind == "end" and self._receiving is not None:
                self.files[self._receiving] = _untar_one(base64.b64decode("".join(self._chunks)))
                self._receiving = None
            elif kind in ("exit", "timeout", "error"):
                self.ending = f"{kind} {rest}".strip()
            elif kind == "done":
                self.done = True
            return False
        if self._receiving is not None:
            self._chunks.append(line.strip())
            return False
        self.log.append(line)
        return True


def read_nodes(
    stream: Iterable[str],
    nodes: dict[int, NodeReport],
    labelled: bool,
    output: Callable[[str], None] | None,
    expected: int = 1,
) -> bool:
    """Fill `nodes` (by rank) as the lines come; rank 0's log lines also go to `output`, live. Stops
    once `expected` nodes said they are done (True), else at the end of the stream (False)."""
    finished = 0
    for line in stream:
        rank = 0
        if labelled:
            found = _LABEL.match(line)
            if found is not None:
                rank, line = int(found.group(1)), line[found.end() :]
        node = nodes.setdefault(rank, NodeReport())
        was_done = node.done
        if node.take(line) and rank == 0 and output is not None:
            output(line)
        finished += node.done and not was_done
        if finished >= expected:
            return True
    return False


def _untar_one(data: bytes) -> bytes:
    if not data:
        return b""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                return handle.read() if handle else b""
    return b""


def exit_code(ending: str) -> int | None:
    """`exit 3` -> 3; a garbled one -> -1; anything else -> None."""
    if not ending.startswith("exit"):
        return None
    try:
        return int(ending.split()[1])
    except (IndexError, ValueError):
        return -1


def placement_of(nodes: dict[int, NodeReport]) -> dict[str, str]:
    """One node: its placement. Several: node names by rank, comma-joined, each node's GPU ids
    (`n1:0,1;n2:0,1`) and the node count."""
    ranks = sorted(nodes)
    if len(ranks) <= 1:
        return dict(nodes[ranks[0]].placement) if ranks else {}
    placements = [nodes[rank].placement for rank in ranks]
    return {
        "node": ",".join(p.get("node", "?") for p in placements),
        "job": next((p["job"] for p in placements if p.get("job")), ""),
        "gpus": ";".join(f"{p.get('node', '?')}:{p.get('gpus', '')}" for p in placements),
        "nnodes": str(len(ranks)),
    }

"""Each session's shared directory (GPU leases, builds, results in transit) under the temp dir, and
the ones sessions killed with SIGKILL could not remove: the next session on the host removes them."""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
from pathlib import Path

from .gpus.allocator import process_token, token_alive

PREFIX = "pytest-madengine-"
OWNER = "owner"  # `<host> <pid>:<start time>` of the session that made the directory
_OWNER_LINE = re.compile(r"(\S+) (\d+:\S+)")


def make_shared_dir(run_id: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{run_id}-"))
    (path / OWNER).write_text(f"{socket.gethostname()} {process_token()}\n")
    return path


def remove_abandoned(base: Path | None = None) -> int:
    """Remove the shared directories of this host's sessions that are gone; return how many. One
    without an owner line, or made on another host (a container sharing /tmp), is left alone."""
    base = Path(tempfile.gettempdir()) if base is None else base
    host, removed = socket.gethostname(), 0
    for owner in base.glob(f"{PREFIX}*/{OWNER}"):
        try:
            found = _OWNER_LINE.fullmatch(owner.read_text().strip())
        except OSError:
            continue
        if found is None or found.group(1) != host or token_alive(found.group(2)):
            continue
        shutil.rmtree(owner.parent, ignore_errors=True)
        removed += 1
    return removed

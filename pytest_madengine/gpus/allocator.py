"""Exclusive GPU leases shared by every process of a session (xdist workers included).

State lives in one JSON file under a file lock in the session's shared directory. When GPUs are
free, the biggest request that fits goes first (older first among equals): big leases start on an
idle pool and small ones fill the gaps. A request that others have overtaken a bounded number of
times goes next, the pool draining for it, so nothing waits forever: neither a model wanting 8 GPUs
behind a stream of 1-GPU models, nor a 1-GPU model behind a stream of big ones. Holders are known
by pid and process start time, so the GPUs of a killed worker go back on the next request.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock


def process_token(pid: int | None = None) -> str:
    """`pid:starttime`; the start time tells a reused pid from the original."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid)}"


def _stat(pid: int) -> tuple[str, str]:
    """(state, start time) from /proc/<pid>/stat; raises OSError when it cannot be read."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (fields[0] if fields else "?"), (fields[19] if len(fields) > 19 else "?")


def _start_time(pid: int) -> str:
    try:
        return _stat(pid)[1]
    except OSError:
        return "?"


def token_alive(token: str) -> bool:
    pid_text, _, started = token.partition(":")
    pid = int(pid_text)
    try:
        state, start = _stat(pid)
    except FileNotFoundError:
        return False
    except OSError:
        return _signal_alive(pid)
    if state in ("Z", "X"):
        return False  # a killed worker not yet reaped by its parent
    return started in ("?", start)


def _signal_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Grant:
    ticket: str
    ids: tuple[int, ...]
    waited: float


@dataclass(frozen=True)
class Scheduling:
    """How waiting requests are served: the polling interval, how often a big request may be
    overtaken (None: the pool size, at least 4), and how long the first grant of a session waits for
    the expected number of workers to line up (so the biggest goes first)."""

    poll_interval: float = 0.05
    max_bypass: int | None = None
    expected_waiters: int = 1
    gather_s: float = 1.0


class GpuAllocator:
    def __init__(
        self,
        state_dir: Path,
        pool: tuple[int, ...],
        lease_log: Path | None = None,
        scheduling: Scheduling = Scheduling(),
    ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._path = state_dir / "gpu-leases.json"
        self._lock = FileLock(str(state_dir / "gpu-leases.lock"))
        self._pool = pool
        self._poll = scheduling.poll_interval
        max_bypass = scheduling.max_bypass
        self._max_bypass = max_bypass if max_bypass is not None else max(len(pool), 4)
        self._expected_waiters = scheduling.expected_waiters
        self._gather_s = scheduling.gather_s
        self._lease_log = lease_log
        self._token = process_token()

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            try:
                state = json.loads(self._path.read_text())
            except (FileNotFoundError, ValueError):
                state = {"held": {}, "waiting": []}
            self._reap(state)
            yield state
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(self._path)

    @staticmethod
    def _reap(state: dict[str, Any]) -> None:
        """Drop holders and waiters whose process is gone (a worker killed with SIGKILL)."""
        state["held"] = {t: h for t, h in state["held"].items() if token_alive(h["owner"])}
        state["waiting"] = [w for w in state["waiting"] if token_alive(w["owner"])]

    def held(self) -> dict[str, tuple[int, ...]]:
        with self._state() as state:
            return {t: tuple(h["ids"]) for t, h in state["held"].items()}

    def acquire(self, count: int, holder: str = "") -> Grant:
        """Block until `count` GPUs are ours; the caller checked that the pool is big enough."""
        if count > len(self._pool):
            raise ValueError(f"{count} GPUs requested from a pool of {len(self._pool)}")
        ticket = uuid.uuid4().hex
        started = time.monotonic()
        try:
            with self._state() as state:
                state["waiting"].append(
                    {"ticket": ticket, "count": count, "owner": self._token, "holder": holder, "bypassed": 0}
                )
            while True:
                with self._state() as state:
                    ids = self._try_grant(state, ticket, count, holder)
                if ids is not None:
                    grant = Grant(ticket=ticket, ids=ids, waited=time.monotonic() - started)
                    self._log("acquire", grant, holder)
                    return grant
                time.sleep(self._poll)
        except BaseException:
            with self._state() as state:
                state["waiting"] = [w for w in state["waiting"] if w["ticket"] != ticket]
                state["held"].pop(ticket, None)
            raise

    def _try_grant(self, state: dict[str, Any], ticket: str, count: int, holder: str) -> tuple[int, ...] | None:
        waiting = state["waiting"]
        position = next(i for i, w in enumerate(waiting) if w["ticket"] == ticket)
        me = waiting[position]
        if not state.get("granted_any") and len(waiting) < self._expected_waiters:
            first = state.setdefault("first_request", time.time())
            if time.time() - first < self._gather_s:
                return None  # session start: let every worker queue, so priority decides, not a race
        starving = [w for w in waiting if w["bypassed"] >= self._max_bypass]
        if starving and starving[0]["ticket"] != ticket:
            return None  # the oldest request that waited long enough goes next; the pool drains for it
        busy = {i for h in state["held"].values() for i in h["ids"]}
        free = [i for i in self._pool if i not in busy]
        if len(free) < count:
            return None
        for index, other in enumerate(waiting if not starving else ()):
            if index == position or other["count"] > len(free):
                continue
            if other["count"] > count or (other["count"] == count and index < position):
                return None  # a bigger (or older, same-size) request fits: it goes first
        ids = tuple(free[:count])
        for other in waiting[:position]:
            other["bypassed"] += 1
        del waiting[position]
        state["granted_any"] = True
        state["held"][ticket] = {"ids": list(ids), "owner": self._token, "holder": holder or me.get("holder", "")}
        return ids

    def release(self, grant: Grant, holder: str = "") -> None:
        """Give the GPUs back; releasing twice is harmless (early release, then the fixture's)."""
        with self._state() as state:
            released = state["held"].pop(grant.ticket, None) is not None
        if released:
            self._log("release", grant, holder)

    def _log(self, event: str, grant: Grant, holder: str) -> None:
        if self._lease_log is None:
            return
        record = {"event": event, "ticket": grant.ticket, "ids": list(grant.ids), "holder": holder, "t": time.time()}
        with self._lease_log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

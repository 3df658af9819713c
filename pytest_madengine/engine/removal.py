"""Removing finished containers off the critical path.

A model's container has exited (its GPUs are free) by the time it is removed; the engine takes 10-30 ms
to remove it. `docker run --rm` waits for that; we let the next model start meanwhile, on one
background thread, and wait for every removal before the session ends.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Lock
from typing import Any


class Remover:
    """Removes containers one after another in the background; `close` waits for all of them."""

    def __init__(self, remove: Callable[[Any], None]) -> None:
        self._remove = remove
        self._lock = Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[tuple[str, Future[None]]] = []
        self._closed = False

    def submit(self, container: Any) -> None:
        """Remove `container` soon; after `close`, now (nothing may outlive the session)."""
        with self._lock:
            if not self._closed:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pytest-madengine-remove")
                self._pending = [(cid, f) for cid, f in self._pending if not f.done() or f.exception()]
                self._pending.append((str(container.id), self._pool.submit(self._remove, container)))
                return
        self._remove(container)

    def close(self) -> list[str]:
        """Wait for every removal; what failed, one line each (the caller warns, and the run's own
        cleanup by label tries them again)."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, []
            pool, self._pool = self._pool, None
        failures = []
        for container_id, future in pending:
            error = future.exception()
            if error is not None:
                failures.append(f"container {container_id[:12]} was not removed: {error}")
        if pool is not None:
            pool.shutdown(wait=True)
        return failures

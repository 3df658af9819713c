"""The GPU lease rules: who gets GPUs first, which ids, and that dead or interrupted requests never block others.

The queue decisions are checked on the allocator's shared state as every worker sees it (`_try_grant`
decides one request against it), so each rule is exercised without racing threads; leases, releases,
the lease log and the recovery from killed workers go through the public acquire/release/held.
"""

from __future__ import annotations

import _thread
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from pytest_madengine.gpus.allocator import GpuAllocator, Grant, Scheduling, _signal_alive, process_token, token_alive

ME = process_token()


def waiter(ticket: str, count: int, bypassed: int = 0, holder: str = "") -> dict[str, Any]:
    return {"ticket": ticket, "count": count, "owner": ME, "holder": holder or f"test::{ticket}", "bypassed": bypassed}


def state(*waiting: dict[str, Any], busy: tuple[int, ...] = (), granted_any: bool = True) -> dict[str, Any]:
    held = {"holder-ticket": {"ids": list(busy), "owner": ME, "holder": "test::holder"}} if busy else {}
    return {"held": held, "waiting": list(waiting), "granted_any": granted_any}


def decide(
    tmp_path: Path, pool: tuple[int, ...], shared: dict[str, Any], ticket: str, **options: Any
) -> tuple[int, ...] | None:
    """What the request `ticket` gets from `shared` now: its GPU ids, or None (it waits)."""
    me = next(w for w in shared["waiting"] if w["ticket"] == ticket)
    return GpuAllocator(tmp_path, pool, scheduling=Scheduling(**options))._try_grant(shared, ticket, me["count"], "")


# -- which ids -------------------------------------------------------------------------------------------------------


def test_a_grant_takes_the_first_free_ids_in_pool_order(tmp_path: Path) -> None:
    shared = state(waiter("a", 2), busy=(5,))
    assert decide(tmp_path, (5, 3, 1, 0), shared, "a") == (3, 1)
    assert shared["held"]["a"] == {"ids": [3, 1], "owner": ME, "holder": "test::a"}
    assert shared["waiting"] == []
    assert shared["granted_any"] is True


def test_a_request_waits_while_too_few_gpus_are_free(tmp_path: Path) -> None:
    shared = state(waiter("a", 2), busy=(0, 1))
    assert decide(tmp_path, (0, 1, 2), shared, "a") is None
    assert [w["ticket"] for w in shared["waiting"]] == ["a"]
    assert "a" not in shared["held"]


def test_a_request_for_exactly_the_free_gpus_is_granted(tmp_path: Path) -> None:
    assert decide(tmp_path, (0, 1, 2), state(waiter("a", 2), busy=(1,)), "a") == (0, 2)


def test_the_holder_named_at_grant_wins_over_the_queued_one(tmp_path: Path) -> None:
    shared = state(waiter("a", 1, holder="queued"))
    GpuAllocator(tmp_path, (0,))._try_grant(shared, "a", 1, "granting")
    assert shared["held"]["a"]["holder"] == "granting"


# -- who goes first ----------------------------------------------------------------------------------------------------


def test_the_biggest_request_that_fits_goes_first(tmp_path: Path) -> None:
    shared = state(waiter("small", 1), waiter("big", 3))
    assert decide(tmp_path, (0, 1, 2, 3), shared, "small") is None
    assert decide(tmp_path, (0, 1, 2, 3), shared, "big") == (0, 1, 2)


def test_an_older_bigger_request_is_not_overtaken_by_a_smaller_one(tmp_path: Path) -> None:
    shared = state(waiter("big", 2), waiter("small", 1))
    assert decide(tmp_path, (0, 1), shared, "small") is None
    assert decide(tmp_path, (0, 1), shared, "big") == (0, 1)


def test_among_equals_the_older_goes_first(tmp_path: Path) -> None:
    shared = state(waiter("old", 2), waiter("new", 2))
    assert decide(tmp_path, (0, 1, 2, 3), shared, "new") is None
    assert decide(tmp_path, (0, 1, 2, 3), shared, "old") == (0, 1)
    assert decide(tmp_path, (0, 1, 2, 3), shared, "new") == (2, 3)


def test_a_small_request_fills_the_gap_a_big_one_cannot_use(tmp_path: Path) -> None:
    shared = state(waiter("big", 4), waiter("small", 1), busy=(0, 1))
    assert decide(tmp_path, (0, 1, 2, 3), shared, "big") is None
    assert decide(tmp_path, (0, 1, 2, 3), shared, "small") == (2,)
    assert shared["waiting"] == [waiter("big", 4, bypassed=1)]  # overtaken once


def test_a_request_as_big_as_the_free_gpus_counts_as_fitting(tmp_path: Path) -> None:
    shared = state(waiter("small", 1), waiter("fits", 2), busy=(0,))
    assert decide(tmp_path, (0, 1, 2), shared, "small") is None


def test_only_requests_ahead_count_as_overtaken(tmp_path: Path) -> None:
    shared = state(waiter("a", 3, bypassed=1), waiter("b", 2), waiter("c", 1), waiter("d", 1), busy=(0, 1, 2))
    assert decide(tmp_path, (0, 1, 2, 3), shared, "c") == (3,)
    assert [(w["ticket"], w["bypassed"]) for w in shared["waiting"]] == [("a", 2), ("b", 1), ("d", 0)]


# -- nobody waits forever ----------------------------------------------------------------------------------------------


def test_a_request_overtaken_too_often_goes_next_and_the_pool_drains_for_it(tmp_path: Path) -> None:
    pool = (0, 1, 2, 3)  # max_bypass defaults to max(len(pool), 4) = 4
    shared = state(waiter("big", 4, bypassed=4), waiter("small", 1), busy=(0,))
    assert decide(tmp_path, pool, shared, "small") is None  # fits, but the starving request goes first
    shared["held"] = {}
    assert decide(tmp_path, pool, shared, "big") == (0, 1, 2, 3)
    assert decide(tmp_path, pool, shared, "small") is None  # the pool is now big's


def test_one_overtake_short_of_the_bound_a_small_request_may_still_pass(tmp_path: Path) -> None:
    shared = state(waiter("big", 4, bypassed=3), waiter("small", 1), busy=(0,))
    assert decide(tmp_path, (0, 1, 2, 3), shared, "small") == (1,)


def test_the_bound_is_the_pool_size_when_the_pool_is_bigger_than_four(tmp_path: Path) -> None:
    pool = tuple(range(8))
    busy = (0,)
    assert decide(tmp_path, pool, state(waiter("big", 8, bypassed=7), waiter("s", 1), busy=busy), "s") == (1,)
    assert decide(tmp_path, pool, state(waiter("big", 8, bypassed=8), waiter("s", 1), busy=busy), "s") is None


def test_the_bound_can_be_set(tmp_path: Path) -> None:
    shared = state(waiter("big", 2, bypassed=1), waiter("small", 1), busy=(0,))
    assert decide(tmp_path, (0, 1), shared, "small", max_bypass=1) is None
    assert decide(tmp_path, (0, 1), shared, "small", max_bypass=2) == (1,)


def test_a_starving_request_goes_first_even_before_a_bigger_one(tmp_path: Path) -> None:
    shared = state(waiter("bigger", 3), waiter("starving", 1, bypassed=4))
    assert decide(tmp_path, (0, 1, 2, 3), shared, "starving") == (0,)


def test_the_oldest_starving_request_goes_first(tmp_path: Path) -> None:
    shared = state(waiter("first", 1, bypassed=4), waiter("second", 2, bypassed=4))
    assert decide(tmp_path, (0, 1, 2, 3), shared, "second") is None
    assert decide(tmp_path, (0, 1, 2, 3), shared, "first") == (0,)


def test_a_small_request_behind_big_ones_is_not_overtaken_forever(tmp_path: Path) -> None:
    shared = state(waiter("small", 1, bypassed=4), waiter("big", 4))
    assert decide(tmp_path, (0, 1, 2, 3), shared, "big") is None
    assert decide(tmp_path, (0, 1, 2, 3), shared, "small") == (0,)


# -- session start: let every worker queue before the first grant -------------------------------------------------


def test_at_session_start_grants_wait_for_the_expected_workers(tmp_path: Path) -> None:
    shared = state(waiter("a", 1), granted_any=False)
    before = time.time()
    assert decide(tmp_path, (0, 1), shared, "a", expected_waiters=2, gather_s=60) is None
    assert before <= shared["first_request"] <= time.time()
    shared["waiting"].append(waiter("b", 2))
    assert decide(tmp_path, (0, 1), shared, "b", expected_waiters=2, gather_s=60) == (0, 1)  # all queued: go


def test_the_gathering_ends_after_gather_s(tmp_path: Path) -> None:
    shared = state(waiter("a", 1), granted_any=False)
    shared["first_request"] = time.time() - 10
    assert decide(tmp_path, (0, 1), shared, "a", expected_waiters=2, gather_s=60) is None
    assert decide(tmp_path, (0, 1), shared, "a", expected_waiters=2, gather_s=5) == (0,)


def test_no_gathering_once_a_grant_was_made(tmp_path: Path) -> None:
    shared = state(waiter("a", 1), granted_any=True)
    assert decide(tmp_path, (0, 1), shared, "a", expected_waiters=4, gather_s=60) == (0,)


def test_the_gathering_does_not_restart_its_clock(tmp_path: Path) -> None:
    shared = state(waiter("a", 1), granted_any=False)
    shared["first_request"] = started = time.time() - 10
    decide(tmp_path, (0, 1), shared, "a", expected_waiters=2, gather_s=60)
    assert shared["first_request"] == started


# -- leases through the public API ---------------------------------------------------------------------------------------


def test_leases_are_exclusive_and_go_back_on_release(tmp_path: Path) -> None:
    allocator = GpuAllocator(tmp_path, (0, 1, 2, 3), scheduling=Scheduling(gather_s=0))
    pair = allocator.acquire(2, holder="t::pair")
    one = GpuAllocator(tmp_path, (0, 1, 2, 3), scheduling=Scheduling(gather_s=0)).acquire(
        1, holder="t::one"
    )  # another worker's view
    assert (pair.ids, one.ids) == ((0, 1), (2,))
    assert allocator.held() == {pair.ticket: (0, 1), one.ticket: (2,)}
    allocator.release(pair)
    assert allocator.held() == {one.ticket: (2,)}
    assert allocator.acquire(3).ids == (0, 1, 3)


def test_a_grant_reports_the_time_it_waited(tmp_path: Path) -> None:
    allocator = GpuAllocator(tmp_path, (0,), scheduling=Scheduling(gather_s=0))
    before = time.monotonic()
    grant = allocator.acquire(1)
    assert 0 <= grant.waited <= time.monotonic() - before


def test_more_gpus_than_the_pool_has_is_an_error(tmp_path: Path) -> None:
    allocator = GpuAllocator(tmp_path, (0, 1))
    with pytest.raises(ValueError) as info:
        allocator.acquire(3)
    assert str(info.value) == "3 GPUs requested from a pool of 2"
    assert allocator.acquire(2).ids == (0, 1)


def test_the_lease_log_has_one_line_per_acquire_and_release(tmp_path: Path) -> None:
    log = tmp_path / "leases.jsonl"
    allocator = GpuAllocator(tmp_path / "state", (0, 1), lease_log=log)

    def records() -> list[tuple[str, str, list[int], str]]:
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        return [(r["event"], r["ticket"], r["ids"], r["holder"]) for r in lines]

    before = time.time()
    grant = allocator.acquire(2, holder="t::a")
    allocator.release(grant, holder="t::a")
    assert records() == [("acquire", grant.ticket, [0, 1], "t::a"), ("release", grant.ticket, [0, 1], "t::a")]
    allocator.release(grant, holder="t::a")  # twice is harmless, and not logged again
    assert len(records()) == 2
    times = [json.loads(line)["t"] for line in log.read_text().splitlines()]
    assert before <= times[0] <= times[1] <= time.time()
    unnamed = allocator.acquire(1)
    allocator.release(unnamed)
    assert records()[2:] == [("acquire", unnamed.ticket, [0], ""), ("release", unnamed.ticket, [0], "")]


def test_no_log_is_written_without_a_lease_log(tmp_path: Path) -> None:
    allocator = GpuAllocator(tmp_path, (0,))
    allocator.release(allocator.acquire(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-leases.json", "gpu-leases.lock"]


def test_a_failing_lease_log_leaves_no_gpu_held(tmp_path: Path) -> None:
    log = tmp_path / "not-a-file"
    log.mkdir()
    allocator = GpuAllocator(tmp_path / "state", (0, 1), lease_log=log)
    with pytest.raises(IsADirectoryError):
        allocator.acquire(1)
    assert allocator.held() == {}
    assert GpuAllocator(tmp_path / "state", (0, 1)).acquire(2).ids == (0, 1)


def test_a_corrupt_state_file_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / "gpu-leases.json").write_text("{half")
    assert GpuAllocator(tmp_path, (0,)).acquire(1).ids == (0,)


# -- interrupted waits and killed workers do not block anyone ---------------------------------------------------------


class Interrupted(Exception):
    pass


@contextmanager
def interrupt_when(condition: Callable[[], bool], deadline_s: float = 30.0) -> Iterator[None]:
    """Raise Interrupted in this (main) thread once `condition` holds, as pytest-timeout's signal does;
    also after `deadline_s`, so a wait that should end but does not fails instead of hanging."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    stop = threading.Event()

    def watch() -> None:
        end = time.monotonic() + deadline_s
        while not stop.is_set() and not condition() and time.monotonic() < end:
            stop.wait(0.005)
        if not stop.is_set():
            _thread.interrupt_main(signal.SIGUSR1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGUSR1, previous)


def queued(state_dir: Path) -> int:
    try:
        return len(json.loads((state_dir / "gpu-leases.json").read_text())["waiting"])
    except (FileNotFoundError, ValueError):
        return 0


def acquire_before_deadline(allocator: GpuAllocator, count: int, deadline_s: float = 20) -> Grant:
    with interrupt_when(lambda: False, deadline_s=deadline_s):
        grant = allocator.acquire(count)
    return grant


class CountingAllocator(GpuAllocator):
    """Counts its finished updates of the shared state: a request's queuing, then one per poll."""

    updates = 0

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        with super()._state() as shared:
            yield shared
        self.updates += 1


def test_an_interrupted_wait_leaves_the_queue(tmp_path: Path) -> None:
    allocator = CountingAllocator(tmp_path, (0, 1), scheduling=Scheduling(poll_interval=0.005))
    both = allocator.acquire(2)
    start = allocator.updates
    # interrupted (as by pytest-timeout) once it has queued and polled: it waits, every GPU is held
    with pytest.raises(Interrupted), interrupt_when(lambda: allocator.updates >= start + 2):
        allocator.acquire(1)
    allocator.release(both)
    # the abandoned request (older, same size) would otherwise go first forever
    assert acquire_before_deadline(allocator, 1).ids == (0,)


def fork_worker(state_dir: Path, pool: tuple[int, ...], count: int) -> int:
    """A worker process that asks for `count` GPUs, then stays until killed (it never releases)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            GpuAllocator(state_dir, pool, scheduling=Scheduling(poll_interval=0.005, gather_s=0)).acquire(count)
            signal.pause()
        finally:
            os._exit(0)
    return pid


def kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_small_request_may_pass_a_big_one_waiting_in_another_worker(tmp_path: Path) -> None:
    allocator = GpuAllocator(tmp_path, (0, 1), scheduling=Scheduling(poll_interval=0.005, max_bypass=1))
    allocator.acquire(1)
    pid = fork_worker(tmp_path, (0, 1), 2)  # waits for both GPUs
    try:
        with interrupt_when(lambda: False, deadline_s=20):
            while queued(tmp_path) == 0:
                time.sleep(0.005)
        # the big request cannot use the one free GPU and was never passed yet: the small one takes it
        assert acquire_before_deadline(allocator, 1, deadline_s=5).ids == (1,)
    finally:
        kill(pid)
        os.waitpid(pid, 0)


def test_the_gpus_of_a_killed_worker_go_back(tmp_path: Path) -> None:
    pid = fork_worker(tmp_path, (0, 1), 2)
    allocator = GpuAllocator(tmp_path, (0, 1), scheduling=Scheduling(poll_interval=0.005))
    try:
        with interrupt_when(lambda: False, deadline_s=20):
            while allocator.held() == {}:
                time.sleep(0.005)
        assert list(allocator.held().values()) == [(0, 1)]
        kill(pid)
        # killed but not yet reaped by its parent (a zombie): its GPUs are free already
        assert acquire_before_deadline(allocator, 2).ids == (0, 1)
    finally:
        kill(pid)
        os.waitpid(pid, 0)


def test_the_request_of_a_killed_worker_leaves_the_queue(tmp_path: Path) -> None:
    allocator = GpuAllocator(tmp_path, (0, 1), scheduling=Scheduling(poll_interval=0.005))
    both = allocator.acquire(2)
    pid = fork_worker(tmp_path, (0, 1), 1)
    try:
        with interrupt_when(lambda: False, deadline_s=20):
            while queued(tmp_path) == 0:
                time.sleep(0.005)
        kill(pid)
        os.waitpid(pid, 0)
    finally:
        kill(pid)
    allocator.release(both)
    assert acquire_before_deadline(allocator, 1).ids == (0,)


# -- telling a live worker from a dead one -------------------------------------------------------------------------------


def test_a_token_is_pid_and_start_time() -> None:
    pid, _, started = process_token().partition(":")
    assert int(pid) == os.getpid()
    assert started.isdigit()
    assert process_token(os.getpid()) == process_token()


def test_a_live_process_is_alive_only_with_its_own_start_time() -> None:
    pid, _, started = ME.partition(":")
    assert token_alive(ME)
    assert not token_alive(f"{pid}:{int(started) + 1}")  # the pid reused by another process
    assert token_alive(f"{pid}:?")  # a start time that could not be read is not held against it


def test_a_gone_process_is_dead() -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    token = process_token(pid)  # alive, or a zombie until reaped
    os.waitpid(pid, 0)
    assert not token_alive(token)
    assert process_token(pid) == f"{pid}:?"
    assert not _signal_alive(pid)


def test_a_zombie_is_dead() -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    try:
        token = f"{pid}:?"
        with interrupt_when(lambda: False, deadline_s=20):
            while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                time.sleep(0.005)
        assert not token_alive(token)
    finally:
        os.waitpid(pid, 0)


def test_the_liveness_probe_sends_no_signal() -> None:
    """The probe of a worker whose /proc entry cannot be read must not disturb it (signal 0)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports every signal it gets, in order
        try:
            os.close(read_end)
            for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGTERM):
                signal.signal(signum, lambda s, _f: os.write(write_end, bytes([s])))
            os.write(write_end, b"r")
            while True:
                signal.pause()
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        assert os.read(read_end, 1) == b"r"
        assert _signal_alive(pid)
        os.kill(pid, signal.SIGUSR1)  # pending signals arrive lowest number first: a probe's signal would precede it
        assert os.read(read_end, 1) == bytes([signal.SIGUSR1])
    finally:
        kill(pid)
        os.waitpid(pid, 0)
        os.close(read_end)


class InterruptedRightAfterQueuing(GpuAllocator):
    """A signal (pytest-timeout, Ctrl-C) landing just after the request reached the queue."""

    armed = False

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        with super()._state() as shared:
            yield shared
        if self.armed:
            self.armed = False
            raise Interrupted


def test_an_interrupt_right_after_queuing_leaves_no_request_behind(tmp_path: Path) -> None:
    allocator = InterruptedRightAfterQueuing(tmp_path, (0, 1), scheduling=Scheduling(poll_interval=0.005))
    both = allocator.acquire(2)
    allocator.armed = True
    with pytest.raises(Interrupted):
        allocator.acquire(1)
    allocator.release(both)
    assert acquire_before_deadline(allocator, 1, deadline_s=5).ids == (0,)

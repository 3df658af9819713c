"""Who gets the GPUs, and when: exclusivity judged from the engine, and the allocator's scheduling rules.

The scheduling rules are driven in lockstep: every request is a real `GpuAllocator.acquire` in its own
thread, with its own allocator on one shared state directory, and the pause between two tries waits
for the test to give that request its turn instead of sleeping. So each test decides exactly which
request tries when, and its outcome follows from the rules alone, not from timing.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from zoo import EngineEvents, Zoo, labelled_containers, run_id_of, wait_until

from pytest_madengine.gpus import allocator as gpu_allocator
from pytest_madengine.gpus.allocator import GpuAllocator, Grant, Scheduling

POOL = (0, 1, 2, 3)
TURN_TIMEOUT = 30.0


class _Closed(Exception):
    """Raised in a parked request when the test ends: acquire withdraws it and its thread ends."""


class Lockstep:
    """Requests to GPU allocators sharing one state directory, each in its own thread, taking turns.

    It stands in for the allocator module's `time`: clocks are the real ones, and `sleep` (the pause
    between two tries) parks the calling request until the test calls `turn(name)`.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, state_dir: Path, max_bypass: int) -> None:
        monkeypatch.setattr(gpu_allocator, "time", self)
        self._state_dir = state_dir
        self._max_bypass = max_bypass
        self._cv = threading.Condition()
        self._turn: str | None = None
        self._closing = False
        self._parks: Counter[str] = Counter()
        self._threads: dict[str, threading.Thread] = {}
        self._allocators: dict[str, GpuAllocator] = {}
        self.grants: dict[str, Grant] = {}
        self.order: list[str] = []  # names in the order their requests were granted
        self.errors: list[BaseException] = []

    # the allocator module's view of `time`
    @staticmethod
    def monotonic() -> float:
        return time.monotonic()

    @staticmethod
    def time() -> float:
        return time.time()

    def sleep(self, _seconds: float) -> None:
        name = threading.current_thread().name
        with self._cv:
            self._parks[name] += 1
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._turn == name or self._closing)
            if self._closing:
                raise _Closed
            self._turn = None

    # the test's side
    def request(self, name: str, count: int) -> bool:
        """Queue a request and let it make its first try; True when that try got the GPUs."""
        allocator = GpuAllocator(
            self._state_dir, POOL, scheduling=Scheduling(poll_interval=0.01, max_bypass=self._max_bypass)
        )
        self._allocators[name] = allocator

        def run() -> None:
            try:
                grant = allocator.acquire(count, holder=name)
            except _Closed:
                return
            except BaseException as exc:  # reported by the test, not lost in the thread
                with self._cv:
                    self.errors.append(exc)
                    self._cv.notify_all()
                return
            with self._cv:
                self.grants[name] = grant
                self.order.append(name)
                self._cv.notify_all()

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads[name] = thread
        thread.start()
        return self._settle(name, 0)

    def turn(self, name: str) -> bool:
        """Let a waiting request try once more; True when it got the GPUs."""
        with self._cv:
            assert name not in self.grants, f"{name} is not waiting"
            parks = self._parks[name]
            self._turn = name
            self._cv.notify_all()
        return self._settle(name, parks)

    def _settle(self, name: str, parks: int) -> bool:
        with self._cv:
            settled = self._cv.wait_for(
                lambda: self._parks[name] > parks or name in self.grants or bool(self.errors), TURN_TIMEOUT
            )
            assert not self.errors, self.errors
            assert settled, f"{name} neither got its GPUs nor went back to waiting"
            return name in self.grants

    def waiting(self) -> list[str]:
        return [name for name in self._threads if name not in self.grants]

    def release(self, name: str) -> None:
        self._allocators[name].release(self.grants[name], holder=name)

    def busy(self) -> set[int]:
        return {i for ids in next(iter(self._allocators.values())).held().values() for i in ids}

    def rounds(self, priority: list[str], release_each: bool) -> None:
        """Give every waiting request a turn, in `priority` order, until all have their GPUs;
        with `release_each`, a request gives its GPUs back as soon as it gets them."""
        for _ in range(len(priority) + 2):
            for name in priority:
                if name in self.grants:
                    continue
                if self.turn(name) and release_each:
                    self.release(name)
            if not self.waiting():
                return
        raise AssertionError(f"still waiting after every request had its turns: {self.waiting()}")

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        for thread in self._threads.values():
            thread.join(timeout=TURN_TIMEOUT)


@pytest.fixture
def lockstep(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Lockstep]]:
    made: list[Lockstep] = []

    def make(max_bypass: int = 4) -> Lockstep:
        made.append(Lockstep(monkeypatch, tmp_path / "state", max_bypass))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


def test_the_biggest_request_that_fits_goes_first(lockstep: Callable[..., Lockstep]) -> None:
    steps = lockstep()
    assert steps.request("blocker", 4)
    assert not steps.request("small", 1)  # older
    assert not steps.request("big", 2)  # newer, bigger
    steps.release("blocker")
    steps.rounds(["small", "big"], release_each=False)  # the small one has the first turn every round
    assert steps.order == ["blocker", "big", "small"]
    assert (steps.grants["big"].ids, steps.grants["small"].ids) == ((0, 1), (2,))


def test_a_big_request_overtaken_by_a_stream_of_small_ones_goes_next(lockstep: Callable[..., Lockstep]) -> None:
    steps = lockstep(max_bypass=2)
    assert steps.request("small0", 1)
    assert not steps.request("big", 4)  # GPU 0 is busy
    # A stream of 1-GPU requests: each ends only after the next has started, so a GPU is always busy
    # and the big request never fits unless the pool drains for it.
    previous = "small0"
    for index in range(1, 10):
        refused = f"small{index}"
        if not steps.request(refused, 1):
            break
        steps.release(previous)
        previous = refused
    else:
        pytest.fail(f"the stream overtook the big request forever: {steps.order}")
    assert len(steps.busy()) == 1, "the pool drains: the next small request waits though GPUs are free"
    steps.release(previous)
    steps.rounds([refused, "big"], release_each=True)
    assert steps.order == ["small0", "small1", "small2", "big", "small3"]  # overtaken exactly max_bypass times


def test_a_small_request_overtaken_by_big_ones_goes_next(lockstep: Callable[..., Lockstep]) -> None:
    steps = lockstep(max_bypass=2)
    assert steps.request("blocker", 4)
    assert not steps.request("small", 1)  # oldest
    for index in range(1, 4):
        assert not steps.request(f"big{index}", 4)
    steps.release("blocker")
    # Bigger requests go first, and the big ones have their turns before the small one every round.
    steps.rounds(["big1", "big2", "big3", "small"], release_each=True)
    assert steps.order == ["blocker", "big1", "big2", "small", "big3"]  # overtaken exactly max_bypass times


# --- the plugin, judged from the engine -----------------------------------------------------------

GPU_LINE = re.compile(r"gpus-of (\S+): ([\d,]+)")
SLEEPER = '#!/bin/bash\necho "gpus-of $MAD_MODEL_NAME: $MAD_HOST_GPU_IDS"\nsleep {seconds}\necho "performance: 1 x"\n'
ARGS = ("--madengine-arch", "gfx942", "--madengine-gpus", "0-3", "-p", "no:cacheprovider")


def lifetimes(events: EngineEvents, run_id: str, count: int) -> dict[str, tuple[float, float]]:
    """(start, die) in engine time per model name, once the engine has reported every container's end."""
    wait_until(lambda: len(events.of_run(run_id, "die")) >= count, 30, "a die event for every container")
    starts, dies = events.times(run_id, "start"), events.times(run_id, "die")
    assert len(starts) == len(dies) == count, (starts, dies)
    return {nodeid.split("::")[1].split("[")[0]: (starts[nodeid], dies[nodeid]) for nodeid in starts}


def test_containers_sharing_a_gpu_never_run_at_the_same_time(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("sleeper/run.sh", SLEEPER.format(seconds=4))  # long enough to overlap on a loaded host
    sizes = [2, 1, 1, 2, 1, 1, 2, 1]
    zoo.models([zoo.model(f"m{i}", script="scripts/sleeper/run.sh", n_gpus=str(n)) for i, n in enumerate(sizes)])
    with EngineEvents(docker_client) as events:
        result = pytester.runpytest_subprocess(
            *ARGS, "-n", "4", "-rA", "--madengine-lease-log", "leases.jsonl", timeout=300
        )
        run_id = run_id_of(pytester.path)
        result.assert_outcomes(passed=len(sizes))
        lives = lifetimes(events, run_id, len(sizes))
    # The GPU ids each container had, as its own script saw them.
    gpus = {name: set(map(int, ids.split(","))) for name, ids in GPU_LINE.findall(result.stdout.str())}
    assert {name: len(ids) for name, ids in gpus.items()} == {f"m{i}": n for i, n in enumerate(sizes)}
    names = sorted(lives)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]

    def overlap(a: str, b: str) -> bool:
        return lives[a][0] < lives[b][1] and lives[b][0] < lives[a][1]

    shared = [(a, b, gpus[a] & gpus[b]) for a, b in pairs if gpus[a] & gpus[b] and overlap(a, b)]
    assert shared == [], f"containers ran at the same time on the same GPUs: {shared}; lifetimes {lives}"
    together = [(a, b) for a, b in pairs if not gpus[a] & gpus[b] and overlap(a, b)]
    assert together, f"no two containers on different GPUs ran at the same time: {lives}"
    # --madengine-lease-log: one acquire and one release line per lease, with the ids the container saw.
    leases = [json.loads(line) for line in (pytester.path / "leases.jsonl").read_text().splitlines()]
    for event in ("acquire", "release"):
        lines = [e for e in leases if e["event"] == event]
        assert {e["holder"].split("::")[1].split("[")[0]: set(e["ids"]) for e in lines} == gpus
        assert len(lines) == len(sizes)
    assert labelled_containers(docker_client, run_id) == []


def test_under_xdist_models_needing_more_gpus_start_first(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("m/run.sh", "#!/bin/bash\necho 'performance: 1 x'\n")
    zoo.models(
        [
            zoo.model(name, script="scripts/m/run.sh", n_gpus=n)
            for name, n in (("one", "1"), ("four", "4"), ("two", "2"))
        ]
    )
    with EngineEvents(docker_client) as events:
        result = pytester.runpytest_subprocess(*ARGS, "-n", "1", timeout=300)
        run_id = run_id_of(pytester.path)
        result.assert_outcomes(passed=3)
        lives = lifetimes(events, run_id, 3)
    assert sorted(lives, key=lambda name: lives[name][0]) == ["four", "two", "one"]

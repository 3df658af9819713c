"""Removal off the critical path: `submit` returns at once, `close` waits for all and names failures."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pytest_madengine.engine.removal import Remover


@dataclass(frozen=True)
class Box:
    id: str


class Gate:
    """A removal that waits for the test to open the gate (bounded, so a broken Remover fails, not hangs)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.removed: list[str] = []
        self.threads: set[str] = set()

    def __call__(self, container: Box) -> None:
        self.open.wait(timeout=10)
        self.threads.add(threading.current_thread().name)
        if container.id.startswith("bad"):
            raise RuntimeError("engine said no")
        self.removed.append(container.id)


def test_submit_returns_before_the_removal_and_close_waits_for_every_one_in_order() -> None:
    gate = Gate()
    remover = Remover(gate)
    remover.submit(Box("a" * 64))
    remover.submit(Box("b" * 64))
    assert gate.removed == []  # a synchronous remover would have waited for the gate's timeout
    gate.open.set()
    assert remover.close() == []
    assert gate.removed == ["a" * 64, "b" * 64]
    assert len(gate.threads) == 1  # one background thread, not ours
    assert threading.current_thread().name not in gate.threads


def test_a_failed_removal_is_named_and_the_others_still_happen() -> None:
    gate = Gate()
    gate.open.set()
    remover = Remover(gate)
    for name in ("one", "bad" + "0" * 20, "two"):
        remover.submit(Box(name))
    assert remover.close() == ["container bad000000000 was not removed: engine said no"]
    assert gate.removed == ["one", "two"]


def test_after_close_a_removal_happens_at_once_and_close_again_is_empty() -> None:
    gate = Gate()
    gate.open.set()
    remover = Remover(gate)
    assert remover.close() == []
    remover.submit(Box("late"))
    assert gate.removed == ["late"]
    assert gate.threads == {threading.current_thread().name}
    assert remover.close() == []

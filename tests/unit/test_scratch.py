"""Shared directories of sessions that are gone are removed; a live session's, another host's and
one without an owner line are not."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest

from pytest_madengine.gpus.allocator import process_token
from pytest_madengine.scratch import OWNER, PREFIX, make_shared_dir, remove_abandoned


def shared(base: Path, name: str, owner: str | None) -> Path:
    path = base / f"{PREFIX}{name}"
    path.mkdir()
    (path / "gpus").mkdir()
    if owner is not None:
        (path / OWNER).write_text(owner)
    return path


def test_only_the_directories_of_sessions_gone_from_this_host_are_removed(tmp_path: Path) -> None:
    dead = f"{int(Path('/proc/sys/kernel/pid_max').read_text()) + 1}:12345"  # no process has that pid
    host = socket.gethostname()
    gone = shared(tmp_path, "gone-1", f"{host} {dead}\n")
    alive = shared(tmp_path, "alive-1", f"{host} {process_token()}\n")
    elsewhere = shared(tmp_path, "elsewhere-1", f"not-{host} {dead}\n")
    unowned = shared(tmp_path, "unowned-1", None)
    garbled = shared(tmp_path, "garbled-1", "whatever")
    assert remove_abandoned(tmp_path) == 1
    assert not gone.exists() and all(p.exists() for p in (alive, elsewhere, unowned, garbled))


def test_a_new_shared_directory_names_its_host_and_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = make_shared_dir("abc123")
    assert path.name.startswith(f"{PREFIX}abc123-") and path.parent == tmp_path
    assert (path / OWNER).read_text() == f"{socket.gethostname()} {process_token()}\n"
    assert remove_abandoned() == 0 and path.exists()  # its session, this process, is alive

"""A container's output as it comes, so that a model running for hours is not silent."""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable
from typing import Any

import docker.errors
import requests.exceptions

JOIN_S = 5.0  # after the container stopped, the stream ends at once; this only bounds a stuck engine


class LogStream:
    """Follows a started container's stdout and stderr in a thread, handing each piece to `output`
    and keeping the whole; `text()` is None when the stream broke (then ask the engine for the log)."""

    def __init__(self, container: Any, output: Callable[[str], None]) -> None:
        self._container = container
        self._output = output
        self._parts: list[str] = []
        self._broken = False
        self._thread = threading.Thread(target=self._follow, name=f"logs-{container.id[:12]}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            for chunk in self._container.logs(stream=True, follow=True, stdout=True, stderr=True):
                self._emit(decoder.decode(chunk))
            self._emit(decoder.decode(b"", final=True))
        except (docker.errors.APIError, requests.exceptions.RequestException, OSError):
            self._broken = True

    def _emit(self, text: str) -> None:
        if text:
            self._parts.append(text)
            try:
                self._output(text)
            except Exception:  # a full disk or a closed terminal must not lose the run
                self._output = _discard

    def text(self) -> str | None:
        self._thread.join(JOIN_S)
        if self._broken or self._thread.is_alive():
            return None
        return "".join(self._parts)


def _discard(text: str) -> None:
    """Output that can no longer be shown."""

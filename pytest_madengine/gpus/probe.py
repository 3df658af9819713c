"""Running the vendor tools: each probe is bounded by a timeout that kills its whole process group.

A tool that hung once is not asked again, and every failure becomes a warning naming the tool.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["ProbeRun", "Prober", "known", "run_bounded"]


# Seconds to wait for the pipes to close after the process group was killed. Only a grandchild
# that left the group (setsid) can hold them that long; we give up on its output rather than hang.
_DRAIN_AFTER_KILL = 1.0


@dataclass
class ProbeRun:
    """The outcome of one vendor tool run."""

    ok: bool
    stdout: str = ""
    error: str = ""  # why not ok, phrased to follow the tool's name
    timed_out: bool = False


@dataclass
class Prober:
    """Runs vendor tools, remembering which ones hung so a wedged tool costs one timeout only, and
    what each asked command answered, so that a second reader (rocminfo: GPUs, then the ROCm
    version) does not run it again."""

    env: dict[str, str]
    timeout: float
    warnings: list[str] = field(default_factory=list)
    _dead: set[str] = field(default_factory=set)
    _answers: dict[tuple[str, ...], ProbeRun] = field(default_factory=dict)

    def which(self, tool: str) -> str | None:
        # An env without PATH finds nothing, rather than silently falling back to ours.
        return shutil.which(tool, path=self.env.get("PATH", ""))

    def present(self, tool: str) -> bool:
        return tool not in self._dead and self.which(tool) is not None

    def run(self, tool: str, args: Sequence[str]) -> ProbeRun:
        exe = self.which(tool)
        if exe is None or tool in self._dead:
            return ProbeRun(ok=False, error="is not available")
        asked = (tool, *args)
        if asked not in self._answers:
            self._answers[asked] = run_bounded([exe, *args], self.env, self.timeout)
        result = self._answers[asked]
        if result.timed_out:
            self._dead.add(tool)
        return result

    def warn(self, tool: str, args: Sequence[str], result: ProbeRun) -> None:
        command = " ".join([tool, *args])
        if result.timed_out:
            self.warnings.append(f"{tool} timed out after {self.timeout:.1f} s ({command})")
            return
        head, _, detail = result.error.partition(": ")
        self.warnings.append(f"{tool} {head} ({command})" + (f": {detail}" if detail else ""))

    def warn_unparseable(self, tool: str, args: Sequence[str], stdout: str) -> None:
        command = " ".join([tool, *args])
        sample = repr(_first_line(stdout)[:80]) if stdout.strip() else "nothing"
        self.warnings.append(f"{tool} printed unparseable output ({command}): {sample}")


def run_bounded(argv: list[str], env: Mapping[str, str], timeout: float) -> ProbeRun:
    """subprocess.run, except that a timeout kills the whole process group.

    subprocess.run kills only the direct child on timeout; a shell wrapper's children keep
    running (and may keep the pipes open). A new session makes the tool a group leader we can kill.
    """
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        return ProbeRun(ok=False, error=f"could not be started: {exc.strerror or exc}")
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            # If a grandchild escaped the group it may still hold the pipes: the with-block closes them.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=_DRAIN_AFTER_KILL)
            return ProbeRun(ok=False, timed_out=True, error="timed out")
    stdout = out.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        message = _first_line(err.decode("utf-8", errors="replace")) or _first_line(stdout)
        detail = f": {message}" if message else ""
        return ProbeRun(ok=False, stdout=stdout, error=f"exited with status {proc.returncode}{detail}")
    return ProbeRun(ok=True, stdout=stdout)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


def known(value: str) -> str:
    """Vendor tools print N/A (or [N/A]) for unknown values; we use ""."""
    value = value.strip()
    return "" if value.upper().strip("[]") in {"N/A", "NA", "UNKNOWN", ""} else value

"""Run one model script in its own container and always remove the container.

The run directory is copied in with put_archive, so nothing the script writes reaches the user's
models tree. The zoo's shared scripts/ is bind-mounted read-only when the engine is local (its
cost then does not grow with the zoo) and copied in too otherwise, so a remote DOCKER_HOST works.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest, Mount

from .executor import ExecutorLost, RunOutcome, StartError, Workspace
from .labels import KEPT_LABEL, RUN_LABEL
from .log_stream import LogStream
from .workspace import RUN_DIR, SCRIPTS_MOUNT, WORKSPACE

KILL_GRACE_S = 2.0


class ContainerStartError(StartError):
    """Docker refused to create or start the container (missing image, bad device...)."""


def _walk(source: Path) -> list[Path]:
    """Everything below `source`, following symlinked directories too (Path.rglob does not)."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(source, followlinks=True):
        found.extend(Path(folder, name) for name in [*dirs, *files])
    return sorted(found)


def _add_tree(tar: tarfile.TarFile, source: Path, arcname: str) -> None:
    """Add a directory following symlinks, as madengine's `cp -vLR` does."""
    tar.add(str(source), arcname=arcname, recursive=False)
    for path in _walk(source):
        rel = path.relative_to(source)
        info = tar.gettarinfo(str(path), arcname=f"{arcname}/{rel.as_posix()}")
        if path.is_dir():
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif path.is_file():
            data = path.read_bytes()
            info.type = tarfile.REGTYPE
            info.size = len(data)
            info.linkname = ""
            tar.addfile(info, io.BytesIO(data))


def workspace_archive(workspace: Workspace, with_scripts: bool = True) -> bytes:
    """/myworkspace/scripts (the zoo's shared scripts; left out when it is mounted instead) and
    /myworkspace/run_directory (the model's own), plus the extra files or directories (pre/post
    scripts, the step driver) by name in the run directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        top = tarfile.TarInfo(WORKSPACE.as_posix().lstrip("/"))
        top.type = tarfile.DIRTYPE
        top.mode = 0o777
        tar.addfile(top)
        if with_scripts and workspace.scripts_root.is_dir():
            _add_tree(tar, workspace.scripts_root, "myworkspace/scripts")
        run_dir = RUN_DIR.as_posix().lstrip("/")
        _add_tree(tar, workspace.run_dir, run_dir)
        made: set[str] = set()
        for name, source in workspace.extra.items():
            parent = name.rpartition("/")[0]
            if parent and parent not in made:
                folder = tarfile.TarInfo(f"{run_dir}/{parent}")
                folder.type, folder.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(folder)
                made.add(parent)
            if isinstance(source, bytes):
                info = tarfile.TarInfo(f"{run_dir}/{name}")
                info.size, info.mode = len(source), 0o755
                tar.addfile(info, io.BytesIO(source))
            elif source.is_dir():
                _add_tree(tar, source, f"{run_dir}/{name}")
            else:
                data = source.read_bytes()
                info = tarfile.TarInfo(f"{run_dir}/{name}")
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fetch_tree(started: StartedContainer, path: PurePosixPath, dest: Path) -> Path:
    """Copy a directory out of the container into `dest`; return the copy (for parse_result hooks)."""
    stream, _ = started.container.get_archive(path.as_posix())
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python before 3.11.4 / 3.10.12: no extraction filters
            tar.extractall(dest)
    return dest / path.name


def _fetch_file(container: Any, path: PurePosixPath) -> bytes | None:
    try:
        stream, _ = container.get_archive(path.as_posix())
    except docker.errors.NotFound:
        return None
    raw = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                return handle.read() if handle else None
    return None


@dataclass(frozen=True)
class StartedContainer:
    """The local executor's run handle."""

    container: Any
    started: float  # time.monotonic() at start, for the deadline
    run_id: str = ""
    fetch: tuple[str, ...] = ()  # run-directory files to bring back when it ends

    @property
    def id(self) -> str:
        return str(self.container.id or "")


class DockerConnectionLost(ExecutorLost):
    """The daemon went away while a model ran."""

    perf_reason = "docker connection lost"


def start_container(
    client: docker.DockerClient,
    options: Mapping[str, Any],
    archive: bytes | None,
    check: Callable[[Any], None] | None = None,
) -> StartedContainer:
    """Create, `check` the created container, copy the workspace in (unless `archive` is None) and
    start; on any failure nothing is left behind.

    `options` are keyword arguments for `containers.create`; they must carry the run label.
    """
    labels = options.get("labels") or {}
    if RUN_LABEL not in labels:
        raise ValueError(f"container options must carry the {RUN_LABEL} label")
    try:
        container = client.containers.create(**options)
    except docker.errors.ImageNotFound as exc:
        raise ContainerStartError(f"image not found: {exc.explanation or exc}") from None
    except docker.errors.APIError as exc:
        raise ContainerStartError(str(exc.explanation or exc)) from None
    except requests.exceptions.RequestException as exc:
        raise DockerConnectionLost(f"lost the connection to the Docker daemon: {exc}") from None
    try:
        if check is not None:
            check(container)
        if archive is not None:
            container.put_archive("/", archive)
        container.start()
    except docker.errors.APIError as exc:
        remove_container(container)
        raise ContainerStartError(str(exc.explanation or exc)) from None
    except requests.exceptions.RequestException as exc:
        remove_container(container)
        raise DockerConnectionLost(f"lost the connection to the Docker daemon: {exc}") from None
    except BaseException:
        remove_container(container)
        raise
    return StartedContainer(container=container, started=time.monotonic(), run_id=str(labels[RUN_LABEL]))


def wait_container(
    started: StartedContainer,
    timeout: float,
    fetch: tuple[str, ...] = (),
    on_stopped: Callable[[], None] | None = None,
    output: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Wait until exit or `timeout` seconds after the start (0: no limit), kill past it, collect.

    `on_stopped` runs as soon as the model's processes are gone (before logs are read), so GPUs
    go back to the pool without waiting for the slow parts. `output` gets the log as it comes.
    The caller removes the container.
    """
    container = started.container
    stream = LogStream(container, output) if output is not None else None
    timed_out = False
    exit_code: int | None = None
    remaining = max(timeout - (time.monotonic() - started.started), 0.01) if timeout > 0 else None
    try:
        status = container.wait(timeout=remaining)
        exit_code = int(status.get("StatusCode", -1))
        stopped = True
    except requests.exceptions.RequestException as exc:
        # Over a unix socket a read timeout surfaces as a ConnectionError too: the clock tells them apart.
        if timeout <= 0 or time.monotonic() - started.started < timeout - 0.5:
            raise DockerConnectionLost(f"lost the connection to the Docker daemon: {exc}") from None
        timed_out = True
        stopped = _kill(container)
    duration = time.monotonic() - started.started
    if stopped and on_stopped is not None:
        on_stopped()
    try:
        log = stream.text() if stream is not None else None
        if log is None:
            log = container.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")
        files = {}
        for name in fetch:
            data = _fetch_file(container, RUN_DIR / name)
            if data is not None:
                files[name] = data
    except requests.exceptions.RequestException as exc:
        raise DockerConnectionLost(f"lost the connection to the Docker daemon: {exc}") from None
    return RunOutcome(
        exit_code=exit_code,
        log=log,
        timed_out=timed_out,
        duration=duration,
        container_id=started.id,
        files=files,
    )


def _kill(container: Any) -> bool:
    """Kill and wait briefly; True when the container is known to have stopped."""
    try:
        container.kill()
        container.wait(timeout=KILL_GRACE_S)
    except (docker.errors.APIError, requests.exceptions.RequestException):
        return False
    return True


def remove_container(container: Any) -> None:
    """Force-remove; a container already gone (or a daemon already gone) is fine."""
    remove_by_id(container.client, str(container.id))


def remove_by_id(client: docker.DockerClient, container_id: str) -> None:
    """Force-remove by id; tolerates a container that is gone or being removed, and a gone daemon."""
    try:
        client.api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise
    except requests.exceptions.ConnectionError:
        pass


def keep_for_inspection(
    client: docker.DockerClient, started: StartedContainer, run_id: str, secret_names: Iterable[str] = ()
) -> tuple[str, str]:
    """Freeze the finished container into an image and start an idle copy to `docker exec` into;
    return (container id, image id). The original is removed whatever happens.

    The copy carries KEPT_LABEL instead of the run label, so no cleanup of the run removes it, and
    the image forgets MAD_SECRETS* values rather than storing them.
    """
    container = started.container
    try:
        return _keep(client, started, run_id, secret_names)
    finally:
        remove_container(container)


def _keep(
    client: docker.DockerClient, started: StartedContainer, run_id: str, secret_names: Iterable[str]
) -> tuple[str, str]:
    container = started.container
    container.reload()
    # The image inherits the container's labels: blank the run label so the run's sweep spares the copy.
    changes = [f'LABEL {RUN_LABEL}=""', *(f'ENV {name}=""' for name in secret_names)]
    image = container.commit(repository="pytest-madengine-kept", tag=started.id[:12], changes=changes)
    attrs = container.attrs.get("HostConfig", {})
    keeper = client.containers.run(
        image.id,
        command=["sleep", "2147483647"],
        entrypoint=[],
        working_dir=RUN_DIR.as_posix(),
        labels={KEPT_LABEL: run_id},
        devices=[
            f"{d['PathOnHost']}:{d['PathInContainer']}:{d['CgroupPermissions']}" for d in attrs.get("Devices") or []
        ],
        group_add=attrs.get("GroupAdd") or None,
        device_requests=[
            DeviceRequest(
                driver=r.get("Driver") or "",
                count=r.get("Count") or 0,
                device_ids=r.get("DeviceIDs") or [],
                capabilities=r.get("Capabilities") or [],
                options=r.get("Options") or {},
            )
            for r in attrs.get("DeviceRequests") or []
        ]
        or None,
        # A commit leaves bind mounts out: the copy gets the run's read-only scripts/ mount again.
        mounts=[
            Mount(m["Target"], m["Source"], type="bind", read_only=bool(m.get("ReadOnly")))
            for m in attrs.get("Mounts") or []
            if m.get("Target") == SCRIPTS_MOUNT and m.get("Type") == "bind"
        ]
        or None,
        detach=True,
    )
    return str(keeper.id), str(image.id)

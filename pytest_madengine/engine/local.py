"""The executor for a Docker engine reached through DOCKER_HOST (a local socket, tcp or ssh)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest, Mount

from . import cleanup
from .container import (
    ContainerStartError,
    StartedContainer,
    fetch_tree,
    keep_for_inspection,
    remove_container,
    start_container,
    wait_container,
    workspace_archive,
)
from .executor import Deadline, Kept, PreparedRun, RunHandle, RunOutcome, Workspace
from .run_options import merge_options
from .workspace import (
    RUN_DIR,
    SCRIPTS_MOUNT,
    copy_then_exec,
    escaping_links,
    has_dangling_links,
    mount_scripts,
    program_candidates,
    run_dir_below,
    runs_as_root,
    search_path,
)


def docker_options(run: PreparedRun) -> dict[str, Any]:
    """Keyword arguments for `containers.create`: the run's own, then its run options on top (lists
    such as devices add up, the environment merges, the card wins elsewhere but for the working
    directory, as under madengine), then the run's `customize` (the container_options hook) adjusts them."""
    options: dict[str, Any] = {
        "image": run.image,
        "command": list(run.command),
        "working_dir": RUN_DIR.as_posix(),
        "environment": dict(run.environment),
        "labels": dict(run.labels),
        "detach": True,
    }
    if run.mounts:  # the SDK's list form: two mounts of one host path both stay
        options["volumes"] = [f"{host}:{inside}:rw" for inside, host in run.mounts.items()]
    lease = run.gpus
    if lease.count and lease.vendor == "AMD":
        options["devices"] = ["/dev/kfd:/dev/kfd:rwm", *(f"{n}:{n}:rwm" for n in lease.render_nodes)]
        options["group_add"] = ["video"]
    elif lease.count and lease.vendor == "NVIDIA":
        options["device_requests"] = [DeviceRequest(device_ids=[str(i) for i in lease.ids], capabilities=[["gpu"]])]
    options = merge_options(options, run.run_options)
    # madengine's own --workdir follows the card's options and every step cds into the run directory:
    # a card's -w never moves the model (its command, `bash run.sh`, is relative to the run directory).
    options["working_dir"] = RUN_DIR.as_posix()
    if run.customize is not None:
        run.customize(options)
    return options


def scripts_mount(scripts_root: Path) -> Mount:
    """The zoo's scripts/ at /myworkspace/scripts, read-only: the container sees it and writes nothing back."""
    return Mount(SCRIPTS_MOUNT, str(scripts_root.resolve()), type="bind", read_only=True)


class ImageConfigs:
    """Images' Config (User, Env, Entrypoint), asked of the engine once per image and process and
    shared by whoever needs it; None when the engine cannot say."""

    def __init__(self, connect: Callable[[], docker.DockerClient]) -> None:
        self._connect = connect
        self._configs: dict[str, Mapping[str, Any]] = {}

    def __call__(self, image: str) -> Mapping[str, Any] | None:
        if image not in self._configs:
            try:
                self._configs[image] = self._connect().images.get(image).attrs.get("Config") or {}
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                return None
        return self._configs[image]


class LocalDocker:
    """Runs each model in a container of its own, labelled with the run id and always removed.

    `escaping` and `security_options` are the session's cached answers (symlinks leaving a tree;
    the engine's SecurityOptions) that decide between mounting the zoo's scripts/ and copying it.
    """

    def __init__(
        self,
        connect: Callable[[], docker.DockerClient],
        docker_host: str | None,
        escaping: Callable[[Path], Sequence[Path]] = escaping_links,
        security_options: Callable[[], Sequence[str]] = tuple,
        secret_names: Iterable[str] = (),
        image_configs: ImageConfigs | None = None,
    ) -> None:
        self._connect = connect
        self._docker_host = docker_host
        self._escaping = escaping
        self._security_options = security_options
        self._secret_names = tuple(secret_names)
        self._image_config = image_configs or ImageConfigs(connect)
        self._found: dict[tuple[str, str, str], bool] = {}  # (image, program, PATH): is it there
        self._dangling: dict[Path, bool] = {}  # run directory: holds a link to nothing

    def start(self, run: PreparedRun) -> StartedContainer:
        """The run directory copied in; scripts/ mounted when `mount_scripts` says so, else copied.

        An engine that is local yet does not see our path refuses the mount, naming it: pytest in a
        container talking to the host's engine ("bind source path does not exist"), a path Docker
        Desktop does not share. Then the copy is used instead, as for a remote engine.
        """
        options = docker_options(run)
        client = self._connect()
        workspace = run.workspace
        # Pre/post scripts (MAD's rocEnvTool) write beside themselves under ../scripts: they get the copy.
        mount = not workspace.writes_scripts and mount_scripts(
            self._docker_host, workspace.scripts_root, options, self._escaping, self._security_options
        )
        if mount:
            bind = scripts_mount(workspace.scripts_root)
            mounted = {**options, "mounts": [*(options.get("mounts") or []), bind]}
            try:
                return replace(self._start_mounted(client, mounted, workspace), fetch=run.fetch)
            except ContainerStartError as exc:
                if str(bind["Source"]) not in str(exc):
                    raise
        return replace(start_container(client, options, workspace_archive(workspace)), fetch=run.fetch)

    def _start_mounted(
        self, client: docker.DockerClient, options: dict[str, Any], workspace: Workspace
    ) -> StartedContainer:
        """With scripts/ mounted, a root container whose run directory lies below it copies that
        directory itself (`copy_then_exec`): no put_archive. Anything else gets the archive: another
        user, an entrypoint (it would run before the copy, and may drop root), dropped capabilities."""
        source = run_dir_below(workspace.run_dir, workspace.scripts_root)
        config = self._image_config(str(options["image"]))
        command = options.get("command")
        if workspace.extra or source is None or config is None or not isinstance(command, list) or not command:
            return start_container(client, options, workspace_archive(workspace, with_scripts=False))
        if workspace.run_dir not in self._dangling:
            self._dangling[workspace.run_dir] = has_dangling_links(workspace.run_dir)
        user = str(options.get("user") or config.get("User") or "")
        entrypoint = options.get("entrypoint") or config.get("Entrypoint")
        if self._dangling[workspace.run_dir] or not runs_as_root(user) or entrypoint or options.get("cap_drop"):
            return start_container(client, options, workspace_archive(workspace, with_scripts=False))
        path = search_path(options.get("environment") or {}, config.get("Env") or [])
        check = self._program_check(str(command[0]), path)
        return start_container(client, {**options, "command": copy_then_exec(source, command)}, None, check)

    def _program_check(self, program: str, path: str) -> Callable[[Any], None]:
        """Docker's own setup error for a missing program, kept though the container now starts `sh`
        (which would only fail the run): the program is looked up in the created container with a stat
        of each candidate (a few ms), once per image, program and PATH."""

        def check(container: Any) -> None:
            key = (str(container.attrs.get("Image") or ""), program, path)
            if key not in self._found:
                found = _find(container, program_candidates(program, path))
                if found is None:
                    return  # the engine would not say: let the start tell
                self._found[key] = found
            if not self._found[key]:
                raise ContainerStartError(f'exec: "{program}": executable file not found in $PATH')

        return check

    def wait(self, handle: RunHandle, deadline: Deadline, output: Callable[[str], None] | None = None) -> RunOutcome:
        assert isinstance(handle, StartedContainer)
        return wait_container(handle, deadline.seconds, handle.fetch, deadline.on_stopped, output)

    def copy_out(self, handle: RunHandle, dest: Path, subdir: str = "") -> Path | None:
        assert isinstance(handle, StartedContainer)
        try:
            return fetch_tree(handle, RUN_DIR / subdir if subdir else RUN_DIR, dest)
        except docker.errors.NotFound:
            return None

    def finish(self, handle: RunHandle, keep: bool) -> Kept | None:
        assert isinstance(handle, StartedContainer)
        if not keep:
            remove_container(handle.container)
            return None
        keeper, image = keep_for_inspection(self._connect(), handle, handle.run_id, self._secret_names)
        image_id = image.removeprefix("sha256:")[:12]
        return Kept(
            enter=f"docker exec -it {keeper[:12]} bash", remove=f"docker rm -f {keeper[:12]} && docker rmi {image_id}"
        )

    def remove_run(self, run_id: str, worker: str | None = None) -> int:
        return cleanup.remove_run_containers(self._connect, run_id, worker)


def _find(container: Any, candidates: list[str]) -> bool | None:
    """Whether one of `candidates` exists in the container's filesystem (a path stat: HEAD on the
    archive endpoint, nothing copied); True without candidates; None when the engine gives no answer."""
    api = container.client.api
    url = f"{api.base_url}/v{api.api_version}/containers/{container.id}/archive"
    for candidate in candidates:
        status = api.head(url, params={"path": candidate}).status_code
        if status == 200:
            return True
        if status != 404:
            return None
    return not candidates

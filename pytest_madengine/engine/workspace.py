"""How the zoo's shared `scripts/` reaches a container: bind-mounted read-only, or copied in.

Copying the whole tree costs every item time in proportion to the zoo (MAD's has 24 sub-zoos);
a read-only bind mount costs nothing and still writes nothing back. It needs an engine that sees
our filesystem, and a tree the mount shows as `cp -vLR` would copy it. The copy stays for the rest.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

WORKSPACE = PurePosixPath("/myworkspace")
RUN_DIR = WORKSPACE / "run_directory"
SCRIPTS_MOUNT = "/myworkspace/scripts"
MAX_LINK_HOPS = 40  # as Linux's path resolution


def engine_is_local(docker_host: str | None) -> bool:
    """Whether the engine runs on this machine and sees our paths: DOCKER_HOST unset, or a unix socket.

    tcp://, ssh:// and the rest may be another machine, whose filesystem our paths do not name.
    """
    return not docker_host or docker_host.startswith("unix://")


def engine_confines_mounts(security_options: Iterable[str]) -> bool:
    """Whether the engine may keep containers from reading our files through a bind mount: SELinux
    labels (`name=selinux`; relabelling with `:z` would write to the user's tree), or user-namespace
    remapping (`name=userns`: the container's root is a subordinate uid that cannot read 0600 files)."""
    return any({"name=selinux", "name=userns"} & set(option.split(",")) for option in security_options)


def _links(root: Path) -> Iterator[Path]:
    """Every symlink below `root`, not following them (scandir: no stat per entry)."""
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    yield Path(entry.path)
                elif entry.is_dir():
                    pending.append(Path(entry.path))


def _resolves_inside(root: Path, relative: PurePosixPath) -> bool:
    """Whether resolving `relative` from `root`, link by link as the kernel does, stays below `root`
    and meets no absolute link: then the same path resolves alike wherever `root` is mounted."""
    pending = list(relative.parts)
    current: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                return False
            current.pop()
            continue
        path = root.joinpath(*current, part)
        if not path.is_symlink():
            current.append(part)
            continue
        hops += 1
        target = os.readlink(path)
        if hops > MAX_LINK_HOPS or posixpath.isabs(target):
            return False
        pending[:0] = PurePosixPath(target).parts
    return True


def escaping_links(root: Path) -> list[Path]:
    """The symlinks below `root` that a mount of `root` elsewhere would leave dangling or pointing
    somewhere else (absolute, or reaching above `root`): `cp -vLR` copies what they point to."""
    return sorted(
        link for link in _links(root) if not _resolves_inside(root, PurePosixPath(link.relative_to(root).as_posix()))
    )


def has_dangling_links(root: Path) -> bool:
    """Whether a symlink below `root` points at nothing: the archive leaves it out, where a copy in
    the container (`cp -RL`) would stop at it."""
    return any(not link.exists() for link in _links(root))


def _targets(options: Mapping[str, Any]) -> Iterator[str]:
    """Container paths of the `volumes` and `mounts` in docker SDK create options."""
    volumes = options.get("volumes") or {}
    if isinstance(volumes, Mapping):
        for host, spec in volumes.items():
            yield str(spec.get("bind", host)) if isinstance(spec, Mapping) else str(spec)
    else:
        for text in volumes:
            parts = str(text).split(":")
            yield parts[1] if len(parts) > 1 else parts[0]
    for mount in options.get("mounts") or []:
        if isinstance(mount, Mapping):
            yield str(mount.get("Target", ""))
        else:  # "source:target[:mode]" as the SDK also takes
            parts = str(mount).split(":")
            yield parts[1] if len(parts) > 1 else parts[0]


def covers_scripts(targets: Iterable[str]) -> bool:
    """Whether a mount of the user's lands on /myworkspace/scripts or inside it (ours would clash)."""
    for target in targets:
        path = posixpath.normpath(target) if target else ""
        if path == SCRIPTS_MOUNT or path.startswith(SCRIPTS_MOUNT + "/"):
            return True
    return False


def mount_scripts(
    docker_host: str | None,
    scripts_root: Path,
    options: Mapping[str, Any],
    escaping: Callable[[Path], Sequence[Path]] = escaping_links,
    security_options: Callable[[], Sequence[str]] = tuple,
) -> bool:
    """The choice: bind-mount `scripts_root` read-only at /myworkspace/scripts (True) or copy it (False).

    Mount when the engine is local and lets containers read our files, the tree exists, no mount of
    the user's covers the place, and every symlink in it resolves inside it (else the container
    would see what `cp -vLR` would not). `escaping` finds those links and `security_options` asks
    the engine; a session passes cached ones, so neither is paid per item.
    """
    return (
        engine_is_local(docker_host)
        and scripts_root.is_dir()
        and not covers_scripts(_targets(options))
        and not escaping(scripts_root)
        and not engine_confines_mounts(security_options())
    )


def run_dir_below(run_dir: Path, scripts_root: Path) -> PurePosixPath | None:
    """The model's run directory as seen through the scripts mount, or None when it lies elsewhere."""
    inside, root = run_dir.resolve(), scripts_root.resolve()
    if not inside.is_relative_to(root):
        return None
    return PurePosixPath(SCRIPTS_MOUNT, inside.relative_to(root).as_posix())


def runs_as_root(user: str) -> bool:
    """Whether a container `user` (the `user` option, else the image's Config.User) is root."""
    return user.split(":", 1)[0] in ("", "root", "0")


def copy_then_exec(source: PurePosixPath, command: Sequence[str]) -> list[str]:
    """The model's command behind a copy of its run directory from the read-only scripts mount, made
    as an archive copy would make it (/myworkspace 0777; modes, times and owners kept, as the archive's
    headers carry them; links followed like `cp -vLR`); `exec` keeps the model the container's main
    process. A put_archive costs the engine a process of its own per container, about 50 ms: a sixth
    of a trivial model."""
    script = f'chmod 0777 {WORKSPACE} && cp -RLp {shlex.quote(source.as_posix() + "/.")} {RUN_DIR}/ && exec "$@"'
    return ["sh", "-c", script, "madengine-copy", *command]


def search_path(environment: Mapping[str, str], image_env: Iterable[str]) -> str:
    """The container's PATH: the run's environment, else the image's, else Docker's default."""
    if "PATH" in environment:
        return environment["PATH"]
    for entry in image_env:
        if entry.startswith("PATH="):
            return entry[len("PATH=") :]
    return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def program_candidates(program: str, path: str) -> list[str]:
    """Where the container would find `program`: itself when absolute, else each absolute PATH entry;
    none for a relative path or one in the workspace (the copy has not made the run directory yet)."""
    if "/" in program:
        return [program] if program.startswith("/") and not program.startswith(f"{WORKSPACE}/") else []
    return [f"{folder}/{program}" for folder in path.split(":") if folder.startswith("/")]

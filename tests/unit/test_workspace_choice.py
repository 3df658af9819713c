"""Whether the zoo's scripts/ is bind-mounted read-only or copied into a container (workspace.py)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from docker.types import Mount

from pytest_madengine.engine.workspace import (
    copy_then_exec,
    covers_scripts,
    engine_confines_mounts,
    engine_is_local,
    escaping_links,
    mount_scripts,
    program_candidates,
    run_dir_below,
    runs_as_root,
    search_path,
)


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """zoo/scripts with a model folder and a shared one, zoo/outside beside it."""
    root = tmp_path / "zoo" / "scripts"
    (root / "m").mkdir(parents=True)
    (root / "m" / "run.sh").write_text("echo\n")
    (root / "common").mkdir()
    (root / "common" / "lib.sh").write_text("x=1\n")
    (tmp_path / "zoo" / "outside").mkdir()
    return root


@pytest.mark.parametrize(
    ("docker_host", "local"),
    [
        (None, True),
        ("", True),
        ("unix:///var/run/docker.sock", True),
        ("unix:///run/user/1000/docker.sock", True),
        ("tcp://10.0.0.5:2376", False),
        ("tcp://127.0.0.1:2375", False),  # may be a tunnel to anywhere
        ("ssh://me@gpu-box", False),
        ("npipe:////./pipe/docker_engine", False),
    ],
)
def test_only_an_unset_or_unix_socket_docker_host_is_local(docker_host: str | None, local: bool) -> None:
    assert engine_is_local(docker_host) is local


def test_a_tree_without_links_mounts(scripts: Path) -> None:
    assert escaping_links(scripts) == []
    assert mount_scripts(None, scripts, {}) is True
    assert mount_scripts("unix:///var/run/docker.sock", scripts, {}) is True


def test_a_remote_engine_gets_a_copy(scripts: Path) -> None:
    assert mount_scripts("tcp://gpu-box:2376", scripts, {}) is False
    assert mount_scripts("ssh://gpu-box", scripts, {}) is False


def test_no_scripts_folder_nothing_to_mount(tmp_path: Path) -> None:
    assert mount_scripts(None, tmp_path / "scripts", {}) is False


def test_links_resolving_inside_the_tree_mount(scripts: Path) -> None:
    (scripts / "m" / "common").symlink_to("../common", target_is_directory=True)
    (scripts / "m" / "lib.sh").symlink_to("../common/lib.sh")
    (scripts / "m" / "self").symlink_to(".", target_is_directory=True)
    (scripts / "m" / "gone").symlink_to("no-such-file")  # dangles on the host too: cp -vLR skips it as well
    (scripts / "m" / "via").symlink_to("common/../common/lib.sh")  # through another link, still inside
    assert escaping_links(scripts) == []
    assert mount_scripts(None, scripts, {}) is True


def test_a_link_out_of_the_tree_escapes(scripts: Path) -> None:
    (scripts / "m" / "data").symlink_to("../../outside", target_is_directory=True)
    assert escaping_links(scripts) == [scripts / "m" / "data"]
    assert mount_scripts(None, scripts, {}) is False


def test_an_absolute_link_escapes_even_into_the_tree(scripts: Path) -> None:
    """Inside the container the tree is at /myworkspace/scripts: the host path names nothing there."""
    (scripts / "m" / "lib.sh").symlink_to(scripts / "common" / "lib.sh")
    assert escaping_links(scripts) == [scripts / "m" / "lib.sh"]


def test_a_link_leaving_and_reentering_the_tree_escapes(scripts: Path) -> None:
    """`../../zoo/scripts/common` resolves on the host, but through a folder the container lacks."""
    zoo = scripts.parent.name
    (scripts / "m" / "common").symlink_to(f"../../../{zoo}/scripts/common", target_is_directory=True)
    assert escaping_links(scripts) == [scripts / "m" / "common"]


def test_dotdot_through_a_link_is_resolved_like_the_kernel(scripts: Path) -> None:
    """`up/..` after `up -> ../..` is above the tree, though `m/up/..` reads as `m` lexically."""
    (scripts / "m" / "up").symlink_to("../..", target_is_directory=True)
    (scripts / "m" / "sneaky").symlink_to("up/../outside", target_is_directory=True)
    assert escaping_links(scripts) == [scripts / "m" / "sneaky", scripts / "m" / "up"]


def test_a_link_in_a_deep_folder_is_found(scripts: Path) -> None:
    deep = scripts / "sub" / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "far").symlink_to("../../../../outside", target_is_directory=True)
    (deep / "near").symlink_to("../../../common", target_is_directory=True)
    assert escaping_links(scripts) == [deep / "far"]


def test_a_link_loop_escapes(scripts: Path) -> None:
    (scripts / "m" / "a").symlink_to("b")
    (scripts / "m" / "b").symlink_to("a")
    assert set(escaping_links(scripts)) == {scripts / "m" / "a", scripts / "m" / "b"}


def test_a_linked_scripts_root_is_its_target(tmp_path: Path, scripts: Path) -> None:
    linked = tmp_path / "elsewhere-scripts"
    os.symlink(scripts, linked, target_is_directory=True)
    (scripts / "m" / "common").symlink_to("../common", target_is_directory=True)
    assert escaping_links(linked) == []
    assert mount_scripts(None, linked, {}) is True


@pytest.mark.parametrize(
    "options",
    [
        {"volumes": {"/data/zoo-scripts": {"bind": "/myworkspace/scripts", "mode": "rw"}}},
        {"volumes": {"/data/x": {"bind": "/myworkspace/scripts/data/", "mode": "ro"}}},
        {"volumes": ["/data/x:/myworkspace/scripts:ro"]},
        {"volumes": ["/myworkspace/scripts/cache"]},  # an anonymous volume
        {"mounts": [Mount("/myworkspace/scripts/x", "/data/x", type="bind")]},
        {"mounts": ["/data/x:/myworkspace/scripts"]},
    ],
)
def test_a_users_mount_on_or_inside_scripts_keeps_the_copy(scripts: Path, options: dict[str, object]) -> None:
    assert mount_scripts(None, scripts, options) is False


@pytest.mark.parametrize(
    "options",
    [
        {"volumes": {"/data": {"bind": "/data", "mode": "rw"}}},
        {"volumes": {"/data/ws": {"bind": "/myworkspace", "mode": "rw"}}},  # ours nests inside it
        {"volumes": {"/data/x": {"bind": "/myworkspace/scripts-old", "mode": "rw"}}},
        {"volumes": {"/data/x": {"bind": "/myworkspace/run_directory/data", "mode": "rw"}}},
        {"volumes": ["/data:/data:ro"]},
        {"mounts": [Mount("/cache", "/data/cache", type="bind")]},
        {"volumes": None, "mounts": None},
    ],
)
def test_other_mounts_keep_the_mount(scripts: Path, options: dict[str, object]) -> None:
    assert mount_scripts(None, scripts, options) is True


def test_covers_scripts_normalises_paths() -> None:
    assert covers_scripts(["/myworkspace/./scripts"]) is True
    assert covers_scripts(["/myworkspace/run_directory/../scripts/x"]) is True
    assert covers_scripts(["/myworkspace", "/myworkspace/scriptsx", ""]) is False


@pytest.mark.parametrize(
    ("security_options", "confines"),
    [
        ([], False),
        (["name=seccomp,profile=default"], False),
        (["name=seccomp,profile=default", "name=rootless", "name=cgroupns"], False),
        (["name=apparmor", "name=seccomp,profile=builtin"], False),
        (["name=seccomp,profile=default", "name=selinux"], True),
        (["name=selinux,profile=x"], True),
        (["name=seccomp,profile=builtin", "name=userns"], True),
    ],
)
def test_an_selinux_engine_gets_a_copy(scripts: Path, security_options: list[str], confines: bool) -> None:
    """Under SELinux a container cannot read an unlabelled mount, and relabelling would write to the tree."""
    assert engine_confines_mounts(security_options) is confines
    assert mount_scripts(None, scripts, {}, security_options=lambda: security_options) is not confines


def test_the_cheap_inputs_decide_before_the_walk_and_the_engine(scripts: Path) -> None:
    """A remote engine or a user's mount on scripts/ decides without walking the tree or asking the engine."""

    def no_walk(root: Path) -> list[Path]:
        raise AssertionError("walked")

    def no_engine() -> list[str]:
        raise AssertionError("asked the engine")

    assert mount_scripts("tcp://gpu-box:2376", scripts, {}, no_walk, no_engine) is False
    assert mount_scripts(None, scripts, {"volumes": ["/x:/myworkspace/scripts"]}, no_walk, no_engine) is False
    assert mount_scripts(None, scripts, {}, lambda root: [root / "m" / "data"], no_engine) is False


# -- a root container copies its own run directory from the mount ---------------------------------------------------


def test_the_run_directory_through_the_mount(scripts: Path) -> None:
    assert run_dir_below(scripts / "m", scripts) == PurePosixPath("/myworkspace/scripts/m")
    assert run_dir_below(scripts.parent / "outside", scripts) is None


@pytest.mark.parametrize(
    ("user", "root"), [("", True), ("root", True), ("0", True), ("0:0", True), ("root:video", True), ("65534", False)]
)
def test_which_users_are_root(user: str, root: bool) -> None:
    assert runs_as_root(user) is root


def test_the_copy_runs_before_the_model_and_execs_it() -> None:
    command = copy_then_exec(PurePosixPath("/myworkspace/scripts/my model"), ["bash", "run.sh", "--x=1"])
    assert command[:2] == ["sh", "-c"] and command[3:] == ["madengine-copy", "bash", "run.sh", "--x=1"]
    assert "cp -RLp '/myworkspace/scripts/my model/.' /myworkspace/run_directory/" in command[2]
    assert command[2].endswith('exec "$@"')


def test_where_the_program_is_looked_for() -> None:
    assert search_path({"PATH": "/opt/bin"}, ["PATH=/usr/bin"]) == "/opt/bin"
    assert search_path({}, ["HOME=/root", "PATH=/usr/bin:/bin"]) == "/usr/bin:/bin"
    assert search_path({}, []).startswith("/usr/local/sbin:")
    assert program_candidates("bash", "/usr/bin:relative:/bin") == ["/usr/bin/bash", "/bin/bash"]
    assert program_candidates("/opt/python3", "/usr/bin") == ["/opt/python3"]
    assert program_candidates("./run.sh", "/usr/bin") == []

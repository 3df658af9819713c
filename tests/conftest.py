"""Shared fixtures: the real Docker engine and a zoo in the pytester directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from zoo import BASE_IMAGE, LocalRegistry, Zoo


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real engine. Its absence is a failure: these tests are about running containers."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:  # pragma: no cover - CI must have an engine
        pytest.fail(f"a Docker engine is required for these tests (run tools/setup.sh): {exc}")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:  # pragma: no cover
        pytest.fail(f"base image {BASE_IMAGE} is missing: run tools/base-image.sh")
    yield client
    client.close()


@pytest.fixture(autouse=True, scope="session")
def _remove_test_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """This suite's images are its litter; remove them at the end, tagged or dangling: images built from
    its tmp zoos (their `pytest-madengine.dockerfile` label lies under this session's basetemp; so do
    the images of containers kept for inspection, which inherit it, with those kept containers) and
    test base images labelled `pytest-madengine-tests.basetemp` with it. Images of other sessions on
    the engine name another basetemp and stay."""
    yield
    base = str(tmp_path_factory.getbasetemp())

    def ours(labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        recipe = str(labels.get("pytest-madengine.dockerfile", ""))
        return recipe.startswith(base + os.sep) or labels.get("pytest-madengine-tests.basetemp") == base

    try:
        client = docker.from_env()
        for container in client.api.containers(all=True, filters={"label": "pytest-madengine.kept"}):
            if ours(container.get("Labels")):
                with contextlib.suppress(docker.errors.NotFound):
                    client.api.remove_container(container["Id"], force=True)
        images: dict[str, int] = {}
        for label in ("pytest-madengine.dockerfile", "pytest-madengine-tests.basetemp"):
            for image in client.api.images(all=True, filters={"label": label}):
                if ours(image.get("Labels")):
                    images[image["Id"]] = int(image.get("Created", 0))
        # Children before their parents (a parent with children cannot go); what a removal takes
        # along (untagged parents) is gone by the time its turn comes.
        pending = sorted(images, key=lambda i: images[i], reverse=True)
        for _ in range(3):
            left = []
            for image_id in pending:
                try:
                    client.api.remove_image(image_id, force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError:
                    left.append(image_id)
            if not left or len(left) == len(pending):
                break
            pending = left
    except docker.errors.DockerException:
        pass


VENDOR_TOOLS = ("amd-smi", "rocminfo", "rocm-smi", "nvidia-smi", "hipconfig")


@pytest.fixture(scope="session")
def hermetic_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The host's PATH with every GPU tool hidden: each directory holding one is replaced by a shadow
    directory of links to everything else in it. Tests then see exactly the GPUs their fake host
    (prepended to this PATH) has, on a real GPU host too."""
    shadows = tmp_path_factory.mktemp("hermetic-path")
    parts = []
    for index, entry in enumerate(p for p in os.environ.get("PATH", "").split(os.pathsep) if p):
        folder = Path(entry)
        if not any((folder / tool).exists() for tool in VENDOR_TOOLS):
            parts.append(entry)
            continue
        shadow = shadows / str(index)
        shadow.mkdir()
        for child in folder.iterdir():
            if child.name not in VENDOR_TOOLS:
                (shadow / child.name).symlink_to(child)
        parts.append(str(shadow))
    return os.pathsep.join(parts)


@pytest.fixture(autouse=True)
def _hermetic_gpu_tools(monkeypatch: pytest.MonkeyPatch, hermetic_path: str) -> None:
    """No real (or stray fake) GPU tool reaches a test, nor the sessions it starts."""
    monkeypatch.setenv("PATH", hermetic_path)


@pytest.fixture(autouse=True)
def _run_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions the tests start load run_probe, which records their run id (see zoo.run_id_of)."""
    tests_dir = str(Path(__file__).parent)
    plugins = [p for p in os.environ.get("PYTEST_PLUGINS", "").split(",") if p.strip()]
    monkeypatch.setenv("PYTEST_PLUGINS", ",".join([*plugins, "run_probe"]))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH", "")) if p))


@pytest.fixture
def zoo(pytester: pytest.Pytester) -> Zoo:
    z = Zoo(pytester.path)
    z.dockerfile()
    return z


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A two-node SLURM cluster (n1, n2, 4 fake GPUs each) on this host, for this session; the
    environment a pytest session needs to reach it. Its absence is a failure (tools/setup.sh --test)."""
    if not shutil.which("slurmctld") or not shutil.which("munged"):  # pragma: no cover
        pytest.fail("SLURM (slurm-wlm, munge) is required for the SLURM tests (run tools/setup.sh --test)")
    where = tmp_path_factory.mktemp("slurm")
    script = Path(__file__).parent.parent / "tools" / "slurm-cluster.sh"
    try:
        started = subprocess.run(
            ["bash", str(script), "start", str(where)], capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stderr
        yield {"SLURM_CONF": str(where / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(script), "stop", str(where)], capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if not shutil.which("docker-registry"):  # pragma: no cover - tools/setup.sh installs it
        pytest.fail("Debian's docker-registry is required for the push tests (run tools/setup.sh)")
    reg = LocalRegistry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server on a local port for this session (tools/postgres.sh), and the URL of its
    empty `history` database. Its absence is a failure (tools/setup.sh --test installs it)."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):  # pragma: no cover
        pytest.fail("PostgreSQL is required for the history tests (run tools/setup.sh --test)")
    # Not under pytest's basetemp: the server runs as `postgres`, and pytest's folders are root's alone.
    where = Path(tempfile.mkdtemp(prefix="pytest-madengine-pg-"))
    script = Path(__file__).parent.parent / "tools" / "postgres.sh"
    try:
        started = subprocess.run(
            ["bash", str(script), "start", str(where)], capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stderr
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(script), "stop", str(where)], capture_output=True, timeout=120, check=False)
        shutil.rmtree(where, ignore_errors=True)

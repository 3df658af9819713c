"""The fixtures every model item uses: its image, its GPU lease, and its started container."""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator

import docker.errors
import pytest

from .archs import vendor_of
from .container import StartedContainer, keep_for_inspection, remove_container, start_model
from .execute import container_options, step_files
from .images import BuiltImage
from .lease import Lease
from .manifest import BuildRecord, ManifestError
from .nodes import BUILD_RECORD_KEY, CALL_FAILED_KEY, RELEASE_GPUS_KEY, ModelItem, skip_item
from .registry import find_credentials, login, registry_host
from .registry import pull as pull_image
from .registry import push as push_image
from .runtime import RUNTIME_KEY, Runtime


def _model_item(request: pytest.FixtureRequest, fixture: str) -> ModelItem:
    item = request.node
    if not isinstance(item, ModelItem):
        raise pytest.UsageError(f"{fixture} is for models.json items")
    return item


@pytest.fixture
def madengine_image(request: pytest.FixtureRequest) -> BuiltImage:
    """The item's image: built at most once per session for all items and workers that share it
    (and pushed once with --madengine-registry), or taken from --madengine-manifest."""
    item = _model_item(request, "madengine_image")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    if runtime.settings.manifest is not None:
        image = image_from_manifest(runtime, item)
    else:
        image = runtime.builder().get(item.build_request(runtime.settings))
        published = runtime.registry()
        if published is not None:
            registry, credentials = published
            client = runtime.client()

            def push(tag: str) -> str:
                login(client, registry, credentials)
                return push_image(client, tag, registry, credentials)

            image = runtime.builder().publish_once(image, push)
    item.stash[BUILD_RECORD_KEY] = BuildRecord(
        item=item.name,
        model=item.spec.name,
        docker_image=image.tag,
        dockerfile=str(item.dockerfile.path.relative_to(item.spec.root)) if item.dockerfile else "",
        base_docker=image.base_docker,
        docker_sha=image.docker_sha,
        build_duration=image.build_duration,
        gpu_architecture=item.arch,
        registry_image=image.registry_image,
    )
    return image


def image_from_manifest(runtime: Runtime, item: ModelItem) -> BuiltImage:
    """The manifest's image for this item, pulled from its registry_image when not here."""
    record = runtime.manifest().get(item.name)
    if record is None:
        raise ManifestError(
            f"model {item.spec.name} ({item.name}) is not in the manifest {runtime.settings.manifest}: "
            "build it there first (--madengine-build-only --madengine-manifest-out)"
        )
    client = runtime.client()
    try:
        local = client.images.get(record.docker_image)
    except docker.errors.ImageNotFound:
        if not record.registry_image:
            raise ManifestError(
                f"model {item.spec.name}: image {record.docker_image} is not here and the manifest has no "
                "registry_image to pull it from"
            ) from None
        credentials = find_credentials(
            registry_host(record.registry_image), credential_file=runtime.settings.credential_file
        )
        pull_image(client, record.registry_image, record.docker_image, credentials)
        local = client.images.get(record.docker_image)
    return BuiltImage(
        tag=record.docker_image,
        image_id=local.id or "",
        build_duration=0.0,
        reused=True,
        log_path="",
        base_docker=record.base_docker,
        docker_sha=record.docker_sha,
        registry_image=record.registry_image,
    )


@pytest.fixture
def madengine_gpus(request: pytest.FixtureRequest) -> Generator[Lease, None, None]:
    """The GPUs this item holds while it runs, exclusive across all workers of the session."""
    item = _model_item(request, "madengine_gpus")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    pool = runtime.pool
    if runtime.settings.build_only:
        yield pool.lease((), None)  # nothing runs: no GPU is held
        return
    wanted = pool.size if item.spec.n_gpus == -1 else item.spec.n_gpus
    if wanted > pool.size:
        skip_item(f"needs {wanted} GPU{'s' if wanted != 1 else ''}, the pool has {pool.size}")
    vendor = vendor_of(item.arch)
    if wanted == 0:
        yield pool.lease((), vendor)
        return
    allocator = runtime.allocator()
    grant = allocator.acquire(wanted, holder=item.nodeid)
    item.stash[RELEASE_GPUS_KEY] = lambda: allocator.release(grant, holder=item.nodeid)
    try:
        yield pool.lease(grant.ids, vendor)
    finally:
        allocator.release(grant, holder=item.nodeid)


@pytest.fixture
def madengine_container(
    request: pytest.FixtureRequest, madengine_image: BuiltImage, madengine_gpus: Lease
) -> Generator[StartedContainer | None, None, None]:
    """The model's container, started last in setup (so Docker refusing it is an error, not a
    failure) and removed when the test ends, whatever way it ends."""
    item = _model_item(request, "madengine_container")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    if runtime.settings.build_only:
        yield None
        return
    options = container_options(
        item.spec,
        item.arch,
        madengine_image.tag,
        madengine_gpus,
        runtime.run_id,
        runtime.worker_id,
        item.nodeid,
        session_pid=runtime.session_pid,
        context=runtime.settings.context,
        secrets=runtime.settings.secrets,
    )
    item.ihook.pytest_madengine_container_options(item=item, spec=item.spec, options=options)
    extra = step_files(item.spec, runtime.settings.context)
    docker_host = os.environ.get("DOCKER_HOST")
    started = start_model(
        runtime.client(), options, item.spec, extra, docker_host, runtime.escaping_links, runtime.security_options
    )
    try:
        yield started
    finally:
        keep = runtime.settings.keep_containers
        if keep == "always" or (keep == "on-failure" and item.stash.get(CALL_FAILED_KEY, False)):
            keeper, image = keep_for_inspection(
                runtime.client(), started, runtime.run_id, runtime.settings.secrets.keys()
            )
            image_id = image.removeprefix("sha256:")[:12]
            warnings.warn(
                pytest.PytestWarning(
                    f"kept the container of {item.nodeid} for inspection: docker exec -it {keeper[:12]} bash "
                    f"(afterwards: docker rm -f {keeper[:12]} && docker rmi {image_id}; its GPUs went back "
                    "to the pool, so another test may be using them)"
                ),
                stacklevel=1,
            )
        else:
            remove_container(started.container)

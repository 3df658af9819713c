"""The fixtures every model item uses: its image, its GPU lease, and its started model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator
from dataclasses import replace

import docker.errors
import pytest

from .engine.build_args import build_request, clone_credentials
from .engine.executor import RunHandle
from .engine.images import BuiltImage
from .engine.prepare import (
    HostFacts,
    RunIdentity,
    for_cluster,
    model_environment,
    prepare_run,
    rocm_path_of,
    run_options_for,
    with_extras,
)
from .engine.registry import find_credentials, login, registry_host
from .engine.registry import pull as pull_image
from .engine.registry import push as push_image
from .engine.steps import Extras
from .gpus.lease import Lease
from .record import ItemRecord
from .report.manifest import ManifestError
from .runtime import RUNTIME_KEY, Runtime
from .zoo.archs import vendor_of
from .zoo.data import choose


def _record(request: pytest.FixtureRequest, fixture: str) -> ItemRecord:
    record = getattr(request.node, "record", None)
    if not isinstance(record, ItemRecord):
        raise pytest.UsageError(f"{fixture} is for models.json items")
    return record


@pytest.fixture
def madengine_image(request: pytest.FixtureRequest) -> BuiltImage:
    """The item's image: built at most once per session for all items and workers that share it
    (and pushed once with --madengine-registry), or taken from --madengine-manifest."""
    record = _record(request, "madengine_image")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    if runtime.settings.manifest is not None:
        record.image = image_from_manifest(runtime, request.node.name, record)
        return record.image
    if runtime.settings.context.container_image:
        record.image = given_image(runtime, runtime.settings.context.container_image)
        return record.image
    if record.dockerfile is None:  # skipped at collection, unless pytest's skipping plugin is off
        pytest.skip(f"no Dockerfile matching {record.spec.dockerfile}.* for {record.arch}")
    hook_args = request.node.ihook.pytest_madengine_build_args(spec=record.spec, arch=record.arch)
    wanted = build_request(record.spec, record.arch, record.dockerfile, runtime.settings.build_arg_sources(), hook_args)
    image = runtime.builder().get(wanted)
    published = runtime.registry()
    if published is not None:
        registry, credentials = published
        client = runtime.client()

        def push(tag: str) -> str:
            login(client, registry, credentials)
            return push_image(client, tag, registry, credentials)

        image = runtime.builder().publish_once(image, push)
    record.image = image
    return image


def given_image(runtime: Runtime, tag: str) -> BuiltImage:
    """The context's MAD_CONTAINER_IMAGE, as it is here: nothing is built."""
    try:
        local = runtime.client().images.get(tag)
    except docker.errors.ImageNotFound:
        raise ManifestError(f"MAD_CONTAINER_IMAGE {tag} is not here: pull or build it first") from None
    return BuiltImage(
        tag=tag,
        image_id=local.id or "",
        build_duration=0.0,
        reused=True,
        log_path="",
        base_docker=tag,
        docker_sha=local.id or "",
    )


def image_from_manifest(runtime: Runtime, item_name: str, record: ItemRecord) -> BuiltImage:
    """The manifest's image for this item, pulled from its registry_image when not here."""
    model = record.spec.name
    found = runtime.manifest().get(item_name)
    if found is None:
        raise ManifestError(
            f"model {model} ({item_name}) is not in the manifest {runtime.settings.manifest}: "
            "build it there first (--madengine-build-only --madengine-manifest-out)"
        )
    client = runtime.client()
    try:
        local = client.images.get(found.docker_image)
    except docker.errors.ImageNotFound:
        if not found.registry_image:
            raise ManifestError(
                f"model {model}: image {found.docker_image} is not here and the manifest has no "
                "registry_image to pull it from"
            ) from None
        credentials = find_credentials(
            registry_host(found.registry_image), credential_file=runtime.settings.credential_file
        )
        pull_image(client, found.registry_image, found.docker_image, credentials)
        local = client.images.get(found.docker_image)
    return BuiltImage(
        tag=found.docker_image,
        image_id=local.id or "",
        build_duration=0.0,
        reused=True,
        log_path="",
        base_docker=found.base_docker,
        docker_sha=found.docker_sha,
        registry_image=found.registry_image,
    )


@pytest.fixture
def madengine_gpus(request: pytest.FixtureRequest) -> Generator[Lease, None, None]:
    """The GPUs this item holds while it runs, exclusive across all workers of the session."""
    record = _record(request, "madengine_gpus")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    pool = runtime.pool
    if runtime.settings.build_only:
        yield pool.lease((), None)  # nothing runs: no GPU is held
        return
    if runtime.settings.slurm is not None:
        # SLURM picks the GPUs when the job starts: the lease says how many; the node says which.
        count = runtime.capacity.largest if record.spec.n_gpus == -1 else record.spec.n_gpus
        record.lease = Lease(ids=tuple(range(count)), system_ngpus=runtime.capacity.largest)
        yield record.lease
        return
    wanted = pool.size if record.spec.n_gpus == -1 else record.spec.n_gpus
    vendor = vendor_of(record.arch)
    if wanted == 0:
        record.lease = pool.lease((), vendor)
        yield record.lease
        return
    allocator, holder = runtime.allocator(), request.node.nodeid
    grant = allocator.acquire(wanted, holder=holder)
    try:
        record.lease = replace(pool.lease(grant.ids, vendor), release=lambda: allocator.release(grant, holder=holder))
        yield record.lease
    finally:
        allocator.release(grant, holder=holder)


@pytest.fixture
def madengine_container(
    request: pytest.FixtureRequest, madengine_image: BuiltImage, madengine_gpus: Lease
) -> Generator[RunHandle | None, None, None]:
    """The started model (its container, with the local engine), started last in setup (so a refusal
    is an error, not a failure) and removed when the test ends, whatever way it ends."""
    record = _record(request, "madengine_container")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    if runtime.settings.build_only:
        yield None
        return
    item, spec, settings = request.node, record.spec, runtime.settings
    who = RunIdentity(runtime.run_id, runtime.worker_id, item.nodeid, runtime.session_pid)
    host = HostFacts(
        secrets=settings.secrets,
        guest_os=settings.guest_os,
        hip_version=runtime.detection.hip_version,
        rocm_path=rocm_path_of(runtime.image_env(madengine_image.tag)),
        environ=dict(os.environ),
    )
    environment = model_environment(spec, record.arch, madengine_gpus, settings.context, host)
    environment.update(clone_credentials(spec, settings.credential_file))
    record.data = data = choose(spec, runtime.data_table(spec.root))
    if data is not None and data.provider == "none" and data.name not in runtime.warned_data:
        runtime.warned_data.add(data.name)
        warnings.warn(
            pytest.PytestWarning(f"data {data.name!r}: no usable provider in data.json; the models run without it"),
            stacklevel=1,
        )
    prepared = replace(
        prepare_run(spec, madengine_image.tag, madengine_gpus, environment, who, settings.context),
        run_options=run_options_for(spec, record.arch, settings.isolation, settings.context),
        limit_s=float(settings.timeout_for(spec.timeout)[0]),
        customize=lambda options: item.ihook.pytest_madengine_container_options(item=item, spec=spec, options=options),
    )
    prepared = with_extras(prepared, spec, settings.context, Extras(data, runtime.tools(spec.root)))
    prepared = for_cluster(prepared, spec, settings.context, os.environ) if settings.slurm is not None else prepared
    executor = runtime.executor()
    record.prepared = prepared
    record.handle = handle = executor.start(prepared)
    try:
        yield handle
    finally:
        keep = runtime.settings.keep_containers
        kept = executor.finish(handle, keep == "always" or (keep == "on-failure" and record.call_failed))
        if kept is not None:
            warnings.warn(
                pytest.PytestWarning(
                    f"kept the container of {item.nodeid} for inspection: {kept.enter} "
                    f"(afterwards: {kept.remove}; its GPUs went back to the pool, so another test may be using them)"
                ),
                stacklevel=1,
            )

"""The fixtures every model item uses: its image, its GPU lease, and its started container."""

from __future__ import annotations

import warnings
from collections.abc import Generator

import pytest

from .archs import vendor_of
from .container import StartedContainer, keep_for_inspection, remove_container, start_container, workspace_archive
from .execute import container_options
from .images import BuiltImage
from .lease import Lease
from .nodes import CALL_FAILED_KEY, RELEASE_GPUS_KEY, ModelItem, skip_item
from .runtime import RUNTIME_KEY, Runtime


def _model_item(request: pytest.FixtureRequest, fixture: str) -> ModelItem:
    item = request.node
    if not isinstance(item, ModelItem):
        raise pytest.UsageError(f"{fixture} is for models.json items")
    return item


@pytest.fixture
def madengine_image(request: pytest.FixtureRequest) -> BuiltImage:
    """The item's image, built at most once per session for all items and workers that share it."""
    item = _model_item(request, "madengine_image")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    return runtime.builder().get(item.build_request(runtime.settings.build_args))


@pytest.fixture
def madengine_gpus(request: pytest.FixtureRequest) -> Generator[Lease, None, None]:
    """The GPUs this item holds while it runs, exclusive across all workers of the session."""
    item = _model_item(request, "madengine_gpus")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    pool = runtime.pool
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
) -> Generator[StartedContainer, None, None]:
    """The model's container, started last in setup (so Docker refusing it is an error, not a
    failure) and removed when the test ends, whatever way it ends."""
    item = _model_item(request, "madengine_container")
    runtime: Runtime = request.config.stash[RUNTIME_KEY]
    options = container_options(
        item.spec,
        item.arch,
        madengine_image.tag,
        madengine_gpus,
        runtime.run_id,
        runtime.worker_id,
        item.nodeid,
        session_pid=runtime.session_pid,
    )
    started = start_container(runtime.client(), options, workspace_archive(item.spec))
    try:
        yield started
    finally:
        keep = runtime.settings.keep_containers
        if keep == "always" or (keep == "on-failure" and item.stash.get(CALL_FAILED_KEY, False)):
            keeper = keep_for_inspection(runtime.client(), started, runtime.run_id)
            warnings.warn(
                pytest.PytestWarning(
                    f"kept the container of {item.nodeid} for inspection: docker exec -it {keeper[:12]} bash "
                    f"(remove it with: docker rm -f {keeper[:12]})"
                ),
                stacklevel=1,
            )
        else:
            remove_container(started.container)

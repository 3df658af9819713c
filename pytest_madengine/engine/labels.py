"""The labels this plugin puts on containers and images: what cleanup, reaping and users'
`docker ps --filter label=...` rely on, named once for the engine code and the sweeps."""

from __future__ import annotations

RUN_LABEL = "pytest-madengine.run"  # the session's run id, on every container it starts
WORKER_LABEL = "pytest-madengine.worker"  # xdist worker id, or "controller"
PID_LABEL = "pytest-madengine.pid"  # the process that started the container
SESSION_PID_LABEL = "pytest-madengine.session-pid"  # the controller: alive means "not an orphan"
HOST_LABEL = "pytest-madengine.host"  # only this host's orphans are reaped here
TEST_LABEL = "pytest-madengine.test"  # the item's node id
KEPT_LABEL = "pytest-madengine.kept"  # a copy kept for inspection: no sweep removes it
HASH_LABEL = "pytest-madengine.hash"  # an image's content hash: an unchanged image is reused
DOCKERFILE_LABEL = "pytest-madengine.dockerfile"  # the Dockerfile an image was built from

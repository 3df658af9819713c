"""Per-process state of a session: run id, shared directory, Docker client, image builder."""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import pytest
import requests.exceptions

from .engine.build_args import GIT_PASSWORD_ENV, GIT_USER_ENV
from .engine.client import Connection
from .engine.executor import Executor
from .engine.images import BuildPolicy, ImageBuilder
from .engine.local import ImageConfigs, LocalDocker
from .engine.registry import Credentials, Registry, RegistryError, find_credentials, registry_host
from .engine.registry import pull as pull_image
from .engine.slurm import SlurmExecutor
from .engine.slurm_capacity import Capacity, SlurmUnavailable, ask_capacity
from .engine.workspace import escaping_links
from .gpus.allocator import GpuAllocator, Scheduling
from .gpus.detect import Detection, detect_gpus
from .gpus.pool import Pool, PoolError, make_pool
from .history.records import PastValues
from .report.baseline import Baseline, load_baseline
from .report.manifest import BuildRecord, load_manifest
from .scratch import make_shared_dir, remove_abandoned
from .settings import Settings
from .zoo.data import load_table
from .zoo.tools import SHIPPED, Tool, load_catalog, select_tools

if TYPE_CHECKING:
    from .history.store import Store

RUNTIME_KEY = pytest.StashKey["Runtime"]()


@dataclass
class Runtime:
    settings: Settings
    run_id: str
    shared_dir: Path
    owns_shared_dir: bool
    detection: Detection
    pool: Pool
    worker_id: str = "controller"
    worker_count: int = 1
    session_pid: int = field(default_factory=os.getpid)
    _allocator: GpuAllocator | None = None
    progress: Callable[[str], None] | None = None
    _manifest: dict[str, BuildRecord] | None = None
    _baselines: dict[tuple[str, str], Baseline] | None = None
    _connection: Connection = field(default_factory=Connection)
    _image_configs: ImageConfigs = field(init=False)
    _executor: Executor | None = None
    _history: Store | None = None
    _past: PastValues | None = None  # a worker receives it from the controller
    _builder: ImageBuilder | None = None
    _escaping_links: dict[Path, list[Path]] = field(default_factory=dict)
    _security_options: list[str] | None = None
    capacity: Capacity = field(default_factory=Capacity)  # with --madengine-slurm: GPUs per node
    warned_fields: set[str] = field(default_factory=set)  # unused models.json fields already named
    warned_dockerfiles: set[Path] = field(default_factory=set)  # left out for want of a header, already named
    warned_data: set[str] = field(default_factory=set)  # data names without a provider, already named
    _data_tables: dict[Path, dict[str, Any]] = field(default_factory=dict)
    _tools: dict[Path, tuple[Tool, ...]] = field(default_factory=dict)

    @classmethod
    def create(
        cls, settings: Settings, workerinput: dict[str, Any] | None, detection: Detection | None = None
    ) -> Runtime:
        """The controller detects GPUs and makes the run id and shared dir; workers receive them."""
        if workerinput and "madengine_run_id" in workerinput:
            detection = Detection.from_dict(json.loads(workerinput["madengine_detection"]))
            return cls(
                settings=settings,
                run_id=str(workerinput["madengine_run_id"]),
                shared_dir=Path(workerinput["madengine_shared_dir"]),
                owns_shared_dir=False,
                detection=detection,
                pool=pool_of(detection, settings),
                worker_id=str(workerinput.get("workerid", "worker")),
                worker_count=int(workerinput.get("workercount", 1)),
                session_pid=int(workerinput.get("madengine_session_pid", os.getpid())),
                capacity=Capacity(json.loads(workerinput.get("madengine_capacity", "{}"))),
                _past=PastValues.from_json(workerinput["madengine_history"])
                if "madengine_history" in workerinput
                else None,
            )
        detection = detection if detection is not None else detect_gpus(timeout=settings.probe_timeout)
        pool = pool_of(detection, settings)
        run_id = uuid.uuid4().hex[:12]
        remove_abandoned()  # what sessions killed with SIGKILL left
        shared = make_shared_dir(run_id)
        capacity = Capacity()
        if settings.slurm is not None:
            try:
                capacity = ask_capacity()
            except SlurmUnavailable as exc:
                shutil.rmtree(shared, ignore_errors=True)
                raise pytest.UsageError(f"--madengine-slurm: {exc}") from None
        return cls(
            settings=settings,
            run_id=run_id,
            shared_dir=shared,
            owns_shared_dir=True,
            detection=detection,
            pool=pool,
            capacity=capacity,
        )

    def __post_init__(self) -> None:
        self._image_configs = ImageConfigs(self._connection)

    def archs(self) -> tuple[str, ...]:
        """The archs to make items for: the user's, else the host's, else cpu."""
        return self.settings.archs or self.detection.archs or ("cpu",)

    def worker_input(self) -> dict[str, str]:
        handed = {
            "madengine_run_id": self.run_id,
            "madengine_shared_dir": str(self.shared_dir),
            "madengine_detection": json.dumps(self.detection.to_dict()),
            "madengine_session_pid": str(self.session_pid),
            "madengine_capacity": json.dumps(self.capacity.to_dict()),
        }
        if self.settings.history is not None:
            handed["madengine_history"] = self.past_values().to_json()
        return handed

    def allocator(self) -> GpuAllocator:
        if self._allocator is None:
            self._allocator = GpuAllocator(
                self.shared_dir / "gpus",
                self.pool.ids,
                lease_log=self.settings.lease_log,
                scheduling=Scheduling(expected_waiters=self.worker_count),
            )
        return self._allocator

    def client(self) -> docker.DockerClient:
        """The Docker client, connected once; a failure is remembered, so every item reports one line."""
        return self._connection()

    def executor(self) -> Executor:
        """Where models run: a SLURM cluster with --madengine-slurm, else the local Docker engine
        (through DOCKER_HOST)."""
        if self._executor is None and self.settings.slurm is not None:
            self._executor = SlurmExecutor(self.settings.slurm, self._registry_image_of)
        if self._executor is None:
            self._executor = LocalDocker(
                self._connection,
                os.environ.get("DOCKER_HOST"),
                self.escaping_links,
                self.security_options,
                [*self.settings.secrets, GIT_USER_ENV, GIT_PASSWORD_ENV],
                self._image_configs,
            )
        return self._executor

    def _registry_image_of(self, tag: str) -> str:
        """Where a node pulls an image it lacks: the manifest's registry_image for the tag."""
        if self.settings.manifest is None:
            return ""
        return next((r.registry_image for r in self.manifest().values() if r.docker_image == tag), "")

    def used_docker(self) -> bool:
        """Whether any process of this run talked to Docker (workers leave their build state here)."""
        return self._connection.connected or (self.shared_dir / "builds").exists()

    def builder(self) -> ImageBuilder:
        if self._builder is None:
            pull = self._pull_base if self.settings.pull else None
            policy = BuildPolicy(rebuild=self.settings.rebuild, pull=pull, progress=self.progress)
            self._builder = ImageBuilder(self.client(), self.shared_dir, self.settings.log_dir, self.run_id, policy)
        return self._builder

    def _pull_base(self, reference: str) -> None:
        """--madengine-pull: the base refreshed from its registry (with credentials when we have some);
        a base that cannot be pulled (a local-only image) is used as it is, with a warning."""
        tagged = reference if ":" in reference.rsplit("/", 1)[-1] or "@" in reference else f"{reference}:latest"
        credentials = find_credentials(registry_host(tagged), credential_file=self.settings.credential_file)
        try:
            pull_image(self.client(), tagged, tagged, credentials)
        except RegistryError as exc:
            warnings.warn(f"pytest-madengine: --madengine-pull: {exc}; using the local {reference}", stacklevel=1)

    def escaping_links(self, scripts_root: Path) -> list[Path]:
        """workspace.escaping_links, walked once per tree and process rather than once per item."""
        if scripts_root not in self._escaping_links:
            self._escaping_links[scripts_root] = escaping_links(scripts_root)
        return self._escaping_links[scripts_root]

    def data_table(self, root: Path) -> dict[str, Any]:
        """The zoo's data.json with the context's `data` over it, read once per zoo and process."""
        if root not in self._data_tables:
            self._data_tables[root] = load_table(root, self.settings.context.raw)
        return self._data_tables[root]

    def tools(self, root: Path) -> tuple[Tool, ...]:
        """The selected tools, their scripts found for this zoo, once per zoo and process."""
        if root not in self._tools:
            self._tools[root] = select_tools(
                self.settings.tools, self.settings.context.raw.get("tools"), self.catalog(root)
            )
        return self._tools[root]

    def catalog(self, root: Path | None = None) -> dict[str, Tool]:
        files = [SHIPPED, *([self.settings.tools_file] if self.settings.tools_file else [])]
        return load_catalog(files, root)

    def image_env(self, image: str) -> list[str]:
        """The image's ENV entries (one engine question per image and process, shared with the executor)."""
        return list((self._image_configs(image) or {}).get("Env") or [])

    def security_options(self) -> list[str]:
        """The engine's `docker info` SecurityOptions (selinux, userns...), asked once per process; an
        engine gone meanwhile answers nothing, and the create that follows reports it the usual way."""
        if self._security_options is None:
            try:
                info = self.client().info()
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                return []
            self._security_options = [str(o) for o in info.get("SecurityOptions") or []]
        return self._security_options

    def manifest(self) -> dict[str, BuildRecord]:
        """The --madengine-manifest records, read once per process."""
        if self._manifest is None:
            assert self.settings.manifest is not None
            self._manifest = load_manifest(self.settings.manifest)
        return self._manifest

    def history(self) -> Store | None:
        """The results history, opened (and migrated) once per process; None without one."""
        if self.settings.history is None:
            return None
        if self._history is None:
            from .history.store import Store  # SQLAlchemy only for a session that keeps history

            self._history = Store(self.settings.history.url)
        return self._history

    def past_values(self) -> PastValues:
        """What the noise gate compares with, read once (on the controller) for the whole session."""
        if self._past is None:
            store, settings = self.history(), self.settings.history
            assert store is not None and settings is not None
            self._past = store.past_values(self.pool.product_name(), settings.last, settings.run)
        return self._past

    def baselines(self) -> dict[tuple[str, str], Baseline] | None:
        """The --madengine-baseline values, read once per process."""
        if self.settings.baseline is None:
            return None
        if self._baselines is None:
            self._baselines = load_baseline(self.settings.baseline)
        return self._baselines

    def registry(self) -> tuple[Registry, Credentials | None] | None:
        if not self.settings.registry:
            return None
        registry = Registry.parse(self.settings.registry)
        return registry, find_credentials(registry.host, credential_file=self.settings.credential_file)

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
        self._connection.close()
        if self.owns_shared_dir:
            shutil.rmtree(self.shared_dir, ignore_errors=True)


def pool_of(detection: Detection, settings: Settings) -> Pool:
    try:
        return make_pool(detection, settings.gpus)
    except PoolError as exc:
        raise pytest.UsageError(f"--madengine-gpus: {exc}") from None

"""One item's record: made at collection, filled by its fixtures and its call, read by every writer.

The record is the route from an item to its reports: the fixtures put the image and the lease in
it, the call the run and its baseline gates, and the report hook turns it into the `ItemReport` that
crosses xdist to perf.csv, JUnit, JSON, HTML, the table, the manifest and the result hook. (The
`gpus` JUnit property and the log's report section go onto the item directly, as pytest expects.)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from .engine.executor import PreparedRun, RunHandle
from .engine.images import BuiltImage
from .engine.steps import DATA_LINE, GIT_LINE
from .errors import MadengineError
from .gpus.lease import Lease
from .report.baseline import Gate
from .report.manifest import BuildRecord
from .report.results import Result
from .report.rows import ResultRow, RowFacts, perf_row
from .run_model import ModelRun
from .zoo.data import DataChoice
from .zoo.dockerfiles import Dockerfile
from .zoo.models import ModelSpec

GIT_RE = re.compile(rf"^{re.escape(GIT_LINE)} ([0-9a-f]{{7,64}})", re.MULTILINE)
DATA_RE = re.compile(rf"^{re.escape(DATA_LINE)} duration=(\d+) size=(\S*)", re.MULTILINE)


class InvalidCard(MadengineError):
    """A models.json entry that cannot become a model: its item errors with the message."""

    perf_reason = "invalid model"


class ModelFailure(MadengineError):
    """The model ran and failed; the message is what the user needs, with the log tail."""


@dataclass
class ItemRecord:
    spec: ModelSpec
    arch: str
    dockerfile: Dockerfile | None
    image: BuiltImage | None = None
    lease: Lease | None = None
    handle: RunHandle | None = None  # set once the model started
    run: ModelRun | None = None  # set once it ended
    prepared: PreparedRun | None = None  # what the container fixture started (repeats start it again)
    gates: tuple[Gate, ...] = ()  # one per result, when a baseline was given
    call_failed: bool = False  # the call raised: --madengine-keep-containers on-failure keeps it
    data: DataChoice | None = None  # the card's data and its provider, once the run is prepared
    broken: str = ""  # why the card cannot become a model: its item errors at setup with this

    @property
    def dockerfile_name(self) -> str:
        return str(self.dockerfile.path.relative_to(self.spec.root)) if self.dockerfile else ""

    def facts(self) -> RowFacts:
        """What every row of this item shares; GPUs count once the model started."""
        image = self.image
        started = self.handle is not None and self.lease is not None
        return RowFacts(
            n_gpus=self.lease.count if started and self.lease else 0,
            training_precision=self.spec.training_precision,
            args=self.spec.args,
            tags=self.spec.tags,
            docker_file=self.dockerfile_name,
            gpu_architecture=self.arch,
            base_docker=image.base_docker if image else "",
            docker_sha=image.docker_sha if image else "",
            docker_image=image.tag if image else "",
            build_duration=image.build_duration if image else 0.0,
            test_duration=self.run.outcome.duration if self.run else 0.0,
            additional_docker_run_options=str(self.spec.extra.get("additional_docker_run_options", "")),
            git_commit=self._from_log(GIT_RE),
            **self._data_facts(),
            **self._placement_facts(),
        )

    def _placement_facts(self) -> dict[str, Any]:
        """Where a scheduler ran it: the node SLURM named (several may share a host)."""
        placement = self.run.outcome.placement if self.run is not None else {}
        if not placement:
            return {}
        return {
            "machine_name": placement.get("node", ""),
            "deployment_type": "slurm",
            "launcher": placement.get("launcher", "slurm"),
            "nnodes": int(placement.get("nnodes", "1") or 1),
        }

    def _from_log(self, pattern: re.Pattern[str]) -> str:
        found = pattern.search(self.run.outcome.log) if self.run is not None else None
        return found.group(1) if found else ""

    def _data_facts(self) -> dict[str, Any]:
        """dataname and its provider; the size and preparation time from the run's log."""
        if self.data is None:
            return {}
        facts = {"dataname": self.data.name, "data_provider_type": self.data.provider}
        found = DATA_RE.search(self.run.outcome.log) if self.run is not None else None
        if found:
            facts.update(data_download_duration=found.group(1), data_size=found.group(2))
        return facts

    def result_rows(self, status: str, reason: str) -> tuple[ResultRow, ...]:
        """The run's results with their gates; without a run, one row of `status` with `reason` (none
        when `status` is empty: the item passed without running, as with --madengine-build-only)."""
        facts = self.facts()
        if self.run is None:
            return (ResultRow(perf_row(Result(self.spec.name, "", "", status, reason), facts)),) if status else ()
        results = self.run.verdict.results
        gates = self.gates or tuple(Gate() for _ in results)
        return tuple(
            ResultRow(perf_row(result, facts, judged), dict(result.extra), judged.baseline, dict(judged.comparison))
            for result, judged in zip(results, gates, strict=True)
        )

    def build_record(self, item_name: str) -> BuildRecord | None:
        if self.image is None:
            return None
        image = self.image
        return BuildRecord(
            item=item_name,
            model=self.spec.name,
            docker_image=image.tag,
            dockerfile=self.dockerfile_name,
            base_docker=image.base_docker,
            docker_sha=image.docker_sha,
            build_duration=image.build_duration,
            gpu_architecture=self.arch,
            registry_image=image.registry_image,
        )

    def build_entry(self, item_name: str) -> dict[str, Any] | None:
        """The manifest entry: the build record and the models.json entry; None without an image."""
        record = self.build_record(item_name)
        return {"record": asdict(record), "model": self.models_entry()} if record is not None else None

    def start_over(self) -> None:
        """Forget an earlier run of the same item (a rerun plugin runs one item object again)."""
        self.image = self.lease = self.handle = self.run = None
        self.gates = ()
        self.call_failed = False
        self.data = None

    def models_entry(self) -> dict[str, Any]:
        """The models.json entry as the manifest stores it."""
        spec = self.spec
        return {
            "name": spec.name,
            "dockerfile": spec.dockerfile,
            "scripts": spec.scripts,
            "args": spec.args,
            "n_gpus": str(spec.n_gpus),
            "tags": list(spec.tags),
            "timeout": spec.timeout,
            "multiple_results": spec.multiple_results,
            "skip_gpu_arch": ",".join(spec.skip_gpu_arch),
            "training_precision": spec.training_precision,
            **dict(spec.extra),
        }

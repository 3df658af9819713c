"""Collection nodes: a models.json file, its model items, and bad entries as collection errors."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
from pytest import ExceptionInfo

from ._compat import FuncFixtureInfo, TerminalRepr, item_callspec, skip_at_item_location
from .archs import skipped_arch, vendor_of
from .baseline import gate_rows, parse_percent
from .container import DockerConnectionLost, StartedContainer
from .dockerfiles import Dockerfile, DockerfileCache, select
from .errors import MadengineError
from .execute import finish_model, log_file_name
from .images import (
    LOG_TAIL_LINES,
    BuildRequest,
    BuiltImage,
    build_args_for,
    context_dir_for,
    log_tail,
)
from .lease import Lease
from .manifest import BuildRecord
from .models import ModelsFileError, ModelSpec, load_models
from .results import FAILURE, Result
from .rows import RowFacts, perf_row
from .runtime import RUNTIME_KEY, Runtime
from .settings import Settings

MARKER_DOC = "models.json tag"
# Set by the lease fixture: gives the item's GPUs back as soon as its container has stopped.
RELEASE_GPUS_KEY = pytest.StashKey[Callable[[], None]]()
# Set when the call phase failed: --madengine-keep-containers on-failure reads it at teardown.
CALL_FAILED_KEY = pytest.StashKey[bool]()
# Set by the image fixture: what --madengine-manifest-out records for this item.
BUILD_RECORD_KEY = pytest.StashKey[BuildRecord]()


class ModelFailure(MadengineError):
    """The model ran and failed; the message is what the user needs, with the log tail."""


def _model_test(madengine_image: BuiltImage, madengine_gpus: Lease, madengine_container: StartedContainer) -> None:
    """Stand-in test function: it exists so that pytest resolves and shows the item's fixtures."""


def _register_markers(config: pytest.Config, tags: Iterable[str]) -> None:
    known = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for tag in tags:
        if tag not in known:
            config.addinivalue_line("markers", f"{tag}: {MARKER_DOC}")
            known.add(tag)


class PlainCollectErrors(pytest.Collector):
    """Shows a CollectError as its one-line message, without a traceback."""

    def repr_failure(self, excinfo: ExceptionInfo[BaseException]) -> str | TerminalRepr:  # type: ignore[override]
        if isinstance(excinfo.value, CollectError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ModelsFile(PlainCollectErrors, pytest.File):
    """A models.json; each (model, arch, matching Dockerfile) becomes a ModelItem."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        try:
            loaded = load_models(self.path)
        except ModelsFileError as exc:
            raise CollectError(str(exc)) from None
        runtime: Runtime = self.config.stash[RUNTIME_KEY]
        settings = runtime.settings
        contexts = [(arch, _dockerfile_context(arch, settings)) for arch in runtime.archs()]
        _register_markers(self.config, (tag for spec in loaded.specs for tag in spec.tags))
        shared = _SharedParts(settings)
        dockerfiles = DockerfileCache()
        chosen: dict[tuple[Path, str, str], list[Dockerfile]] = {}  # per (root, prefix, arch)
        entries: list[tuple[int, ModelSpec | tuple[str, str]]] = [(s.lineno, s) for s in loaded.specs]
        entries += [(line, (name, message)) for name, line, message in loaded.errors]
        for _, entry in sorted(entries, key=lambda pair: pair[0]):
            if isinstance(entry, tuple):
                yield InvalidModel.from_parent(self, name=entry[0], message=entry[1])
                continue
            try:
                found = dockerfiles.candidates(entry)
            except ModelsFileError as exc:
                yield InvalidModel.from_parent(self, name=entry.name, message=str(exc))
                continue
            marks = shared.marks(entry)
            for arch, ctx in contexts:
                key = (entry.root, entry.dockerfile, arch)
                if key not in chosen:
                    chosen[key] = select(found, ctx)
                yield from self._items(entry, arch, chosen[key], ctx, marks, shared)

    def _items(
        self,
        spec: ModelSpec,
        arch: str,
        chosen: list[Dockerfile],
        ctx: dict[str, str],
        marks: tuple[pytest.MarkDecorator, ...],
        shared: _SharedParts,
    ) -> Iterator[ModelItem]:
        if not chosen:
            wanted = ", ".join(f"{k}={v}" for k, v in ctx.items())
            reason = f"no Dockerfile matching {spec.dockerfile}.* has a # CONTEXT for {wanted}"
            yield self._item(spec, arch, arch, None, reason, marks, shared)
            return
        for dockerfile in chosen:
            suffix = f"{arch}-{dockerfile.variant}" if len(chosen) > 1 else arch
            yield self._item(spec, arch, suffix, dockerfile, "", marks, shared)

    def _item(
        self,
        spec: ModelSpec,
        arch: str,
        suffix: str,
        dockerfile: Dockerfile | None,
        skip_reason: str,
        marks: tuple[pytest.MarkDecorator, ...],
        shared: _SharedParts,
    ) -> ModelItem:
        item = ModelItem.from_parent(
            self,
            name=f"{spec.name}[{suffix}]",
            spec=spec,
            arch=arch,
            dockerfile=dockerfile,
            skip_reason=skip_reason,
            marks=marks,
            fixtureinfo=shared.fixtureinfo,  # None for the first item: pytest computes it then
        )
        shared.fixtureinfo = item._fixtureinfo
        # The computed info is shared; the list of names is the item's own, as a conftest may add to it.
        item.fixturenames = list(item.fixturenames)
        return item


def _dockerfile_context(arch: str, settings: Settings) -> dict[str, str]:
    """What an arch's Dockerfiles must match: the guest OS and the arch's vendor (else the context's)."""
    vendor = vendor_of(arch) or settings.context.gpu_vendor
    return {"guest_os": settings.guest_os, **({"gpu_vendor": vendor} if vendor else {})}


class _SharedParts:
    """What the items of one models.json have in common, made once rather than per item: the fixture
    info of `_model_test` (the same function under the same parent for all of them, shared as pytest
    shares it among the items of one parametrized test) and the marks of each (tags, timeout)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.fixtureinfo: FuncFixtureInfo | None = None
        self._marks: dict[tuple[tuple[str, ...], int], tuple[pytest.MarkDecorator, ...]] = {}

    def marks(self, spec: ModelSpec) -> tuple[pytest.MarkDecorator, ...]:
        key = (spec.tags, spec.timeout)
        marks = self._marks.get(key)
        if marks is None:
            marks = self._marks[key] = _model_marks(spec, self._settings)
        return marks


def _model_marks(spec: ModelSpec, settings: Settings) -> tuple[pytest.MarkDecorator, ...]:
    """The model's tags, then the timeout mark pytest-timeout reads (the limit our timer hooks then
    enforce on the container)."""
    marks = [getattr(pytest.mark, tag) for tag in spec.tags]
    limit, _ = settings.timeout_for(spec.timeout)
    if limit > 0:
        marks.append(pytest.mark.timeout(limit, func_only=True))
    return tuple(marks)


class CollectError(MadengineError):
    """A models.json problem shown as a one-line collection error, without a traceback."""


class InvalidModel(PlainCollectErrors):
    """A bad entry: its own collection error, so the good entries beside it still collect."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        raise CollectError(self.message)


class ModelItem(pytest.Function):
    """One model on one arch with one Dockerfile; a Function so that fixtures work as usual."""

    def __init__(
        self,
        *,
        spec: ModelSpec,
        arch: str,
        dockerfile: Dockerfile | None,
        skip_reason: str,
        marks: Sequence[pytest.MarkDecorator],
        **kwargs: Any,
    ) -> None:
        # A CallSpec makes this a parametrized item (`name[arch]`) for pytest's structured node ids,
        # which `--lf` compares; a bare name with brackets would never match a stored id.
        name = str(kwargs["name"])
        callspec = item_callspec(name[name.index("[") + 1 : -1])
        super().__init__(callobj=_model_test, callspec=callspec, originalname=spec.name, **kwargs)
        self.spec = spec
        self.arch = arch
        self.dockerfile = dockerfile
        self.skip_reason = skip_reason
        self.madengine_rows: list[dict[str, str]] = []
        for mark in marks:
            self.add_marker(mark)

    def build_request(self, settings: Settings) -> BuildRequest:
        """Build args, later ones winning: the arch, the context's docker_build_arg, MAD_SECRETS* host
        variables, the model's `cred`, conftest hooks, then --madengine-build-arg."""
        assert self.dockerfile is not None
        args = build_args_for(self.arch, settings.context.docker_build_arg)
        args.update(settings.secrets)
        cred = str(self.spec.extra.get("cred", "") or "")
        if cred:
            args.update(cred_build_args(self.spec, cred, settings.credential_file))
        for extra in self.ihook.pytest_madengine_build_args(spec=self.spec, arch=self.arch):
            args.update({str(k): str(v) for k, v in (extra or {}).items()})
        args.update(settings.build_args)
        return BuildRequest(
            dockerfile=self.dockerfile,
            context_dir=context_dir_for(self.spec.root, self.spec.dockercontext),
            arch=self.arch,
            build_args=args,
        )

    def setup(self) -> None:
        """Skip before any fixture runs: no image is built for an item that will not run."""
        if self.skip_reason:
            skip_item(self.skip_reason)
        runtime: Runtime = self.config.stash[RUNTIME_KEY]
        pool = runtime.pool
        if (
            not runtime.settings.build_only
            and self.arch != "cpu"
            and self.spec.n_gpus != 0
            and not pool.explicit
            and self.arch not in runtime.detection.archs
        ):
            skip_item(f"host has no {self.arch} GPU")
        listed = skipped_arch(self.spec.skip_gpu_arch, self.arch, pool.product_name())
        if listed and not runtime.settings.ignore_skip_gpu_arch:
            skip_item(f"model not supported on {self.arch}: skip_gpu_arch lists {listed}")
        super().setup()

    def row_facts(self, image: BuiltImage | None, n_gpus: int, test_duration: float = 0.0) -> RowFacts:
        return RowFacts(
            n_gpus=n_gpus,
            training_precision=self.spec.training_precision,
            args=self.spec.args,
            tags=self.spec.tags,
            docker_file=str(self.dockerfile.path.relative_to(self.spec.root)) if self.dockerfile else "",
            gpu_architecture=self.arch,
            base_docker=image.base_docker if image else "",
            docker_sha=image.docker_sha if image else "",
            docker_image=image.tag if image else "",
            build_duration=image.build_duration if image else 0.0,
            test_duration=test_duration,
            additional_docker_run_options=str(self.spec.extra.get("additional_docker_run_options", "")),
        )

    def runtest(self) -> None:
        runtime: Runtime = self.config.stash[RUNTIME_KEY]
        if runtime.settings.build_only:
            return  # the image fixture built it: that is the test
        image = self.funcargs["madengine_image"]
        lease = self.funcargs["madengine_gpus"]
        started = self.funcargs["madengine_container"]
        assert isinstance(image, BuiltImage) and isinstance(lease, Lease) and isinstance(started, StartedContainer)
        self.user_properties.append(("gpus", lease.ids_text))
        timeout, source = runtime.settings.timeout_for(self.spec.timeout)
        log_path = runtime.settings.log_dir / log_file_name(self.spec, image_base(self.dockerfile), self.arch)
        release = self.stash.get(RELEASE_GPUS_KEY, None)
        try:
            parse_hook = self.ihook.pytest_madengine_parse_result
            parse = None
            workdir = None
            if parse_hook.get_hookimpls():
                workdir = Path(tempfile.mkdtemp(prefix="workdir-", dir=runtime.shared_dir))

                def parse(log: str, where: Path) -> list[Result] | None:
                    found: list[Result] | None = parse_hook(item=self, log=log, workdir=where)
                    return found

            run = finish_model(self.spec, started, timeout, source, log_path, release, parse, workdir)
        except DockerConnectionLost as exc:
            self.madengine_rows = [
                perf_row(
                    Result(self.spec.name, "", "", FAILURE, "docker connection lost"),
                    self.row_facts(image, lease.count),
                )
            ]
            raise ModelFailure(f"model {self.spec.name} on {self.arch}: {exc}") from None
        self.add_report_section("call", "stdout", run.outcome.log)
        facts = self.row_facts(image, lease.count, run.outcome.duration)
        self.madengine_rows = [perf_row(result, facts) for result in run.verdict.results]
        for row, result in zip(self.madengine_rows, run.verdict.results, strict=True):
            row.update({f"extra.{k}": v for k, v in result.extra.items()})
        baselines = runtime.baselines()
        if baselines is not None:
            own = self.spec.extra.get("max_regression")
            threshold = parse_percent(str(own)) if own not in (None, "") else runtime.settings.max_regression
            regressions = gate_rows(
                self.madengine_rows, self.arch, baselines, threshold, self.spec.extra.get("higher_is_better")
            )
            if regressions and run.verdict.failure is None:
                raise ModelFailure(
                    f"model {self.spec.name} on {self.arch}: performance regression\n" + "\n".join(regressions)
                )
        if run.verdict.failure is not None:
            raise ModelFailure(
                f"model {self.spec.name} on {self.arch} failed: {run.verdict.failure}\n"
                f"image: {image.tag}\nlog: {run.log_path}\n"
                f"--- last {LOG_TAIL_LINES} lines of the container log ---\n{log_tail(run.outcome.log)}"
            )

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.spec.source, self.spec.lineno, self.name

    def repr_failure(self, excinfo: ExceptionInfo[BaseException]) -> str | TerminalRepr:  # type: ignore[override]
        return _plain_failure(excinfo.value) or super().repr_failure(excinfo)

    def _repr_failure_py(  # type: ignore[override]
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        """Setup errors (a failed build, no Docker) come through here: no traceback for them either."""
        return _plain_failure(excinfo.value) or super()._repr_failure_py(excinfo, style=style)


def cred_build_args(spec: ModelSpec, cred: str, credential_file: Path | None) -> dict[str, str]:
    """madengine's `cred`: each key of credential.json's entry becomes build arg `<CRED>_<KEY>`."""
    entries: dict[str, Any] = {}
    if credential_file is not None and credential_file.is_file():
        try:
            entries = json.loads(credential_file.read_text())
        except ValueError:
            raise ModelsFileError(f"{credential_file} is not valid JSON") from None
    entry = entries.get(cred) if isinstance(entries, dict) else None
    if not isinstance(entry, dict):
        raise ModelsFileError(
            f"{spec.source}: model '{spec.name}': field 'cred' names {cred!r}, which {credential_file} does not hold"
        )
    return {f"{cred}_{key.upper()}": str(value) for key, value in entry.items()}


def image_base(dockerfile: Dockerfile | None) -> str:
    return dockerfile.base_name if dockerfile else "none"


def skip_item(reason: str) -> NoReturn:
    """Skip with the item's location (models.json), not this module's, in the summary."""
    skip_at_item_location(reason)


def _plain_failure(exc: BaseException) -> str | None:
    """The text for failures that are about the model or the engine, not about plugin code."""
    return exc.describe() if isinstance(exc, MadengineError) else None

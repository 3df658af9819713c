"""Collection nodes: a models.json file, its model items, and bad entries as collection errors."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pytest import ExceptionInfo

from ._compat import FuncFixtureInfo, TerminalRepr, item_callspec
from .call import model_test
from .engine.build_args import check_cred
from .errors import MadengineError
from .record import ItemRecord
from .runtime import RUNTIME_KEY, Runtime
from .settings import Settings
from .zoo.archs import skipped_arch, vendor_of
from .zoo.dockerfiles import Dockerfile, DockerfileCache, left_out, select
from .zoo.launcher import nnodes_of
from .zoo.models import BrokenEntry, ModelsFileError, ModelSpec, load_models, unused_fields

MARKER_DOC = "models.json tag"


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
        contexts = [(arch, _dockerfile_filter(arch, settings)) for arch in runtime.archs()]
        entries: list[ModelSpec | BrokenEntry] = sorted([*loaded.specs, *loaded.errors], key=lambda e: e.lineno)
        _register_markers(self.config, (tag for entry in entries for tag in entry.tags))
        _warn_unused_fields(self.path, loaded.specs, runtime)
        self._shared = _SharedParts(runtime)
        dockerfiles = DockerfileCache()
        chosen: dict[tuple[Path, str, str], list[Dockerfile]] = {}  # per (root, prefix, arch)
        for entry in entries:
            if isinstance(entry, BrokenEntry):
                yield from self._broken(self._broken_spec(entry), entry.message, contexts)
                continue
            try:
                check_cred(entry, settings.credential_file)
                found = _candidates(entry, dockerfiles, settings)
            except ModelsFileError as exc:
                yield from self._broken(entry, str(exc), contexts)
                continue
            _warn_left_out(found, runtime)
            for arch, ctx in contexts:
                key = (entry.root, entry.dockerfile, arch)
                if key not in chosen:
                    chosen[key] = select(found, ctx)
                yield from self._items(entry, arch, ctx, chosen[key])

    def _broken_spec(self, entry: BrokenEntry) -> ModelSpec:
        """What is known of an entry that did not parse: its name, line and (readable) tags."""
        root = self.path.parent
        return ModelSpec(entry.name, self.path, entry.lineno, root, dockerfile="", scripts="", tags=entry.tags)

    def _broken(self, spec: ModelSpec, message: str, contexts: list[tuple[str, dict[str, str]]]) -> Iterator[ModelItem]:
        """A card that cannot become a model: one item per arch that errors at setup with the message
        (so `-k`, `-m` and --madengine-tags select or deselect it like any other, by name and tags),
        and a collection warning."""
        warn_at(self.path, spec.lineno, f"broken card: {message}")
        for arch, _ in contexts:
            yield self._item(ItemRecord(spec, arch, None, broken=message), arch, "")

    def _items(self, spec: ModelSpec, arch: str, ctx: dict[str, str], chosen: list[Dockerfile]) -> Iterator[ModelItem]:
        """One item per chosen Dockerfile; none chosen: one item, skipped, that says why."""
        if not chosen and self._shared.runtime.settings.context.container_image:
            yield self._item(ItemRecord(spec, arch, None), arch, skip_reason(spec, arch, self._shared.runtime))
            return
        if not chosen:
            wanted = ", ".join(f"{k}={v}" for k, v in ctx.items())
            reason = (
                f"no Dockerfile matching {spec.dockerfile}.* is for {wanted} (by its # CONTEXT or <os>.<vendor> name)"
            )
            yield self._item(ItemRecord(spec, arch, None), arch, reason)
            return
        reason = skip_reason(spec, arch, self._shared.runtime)
        for dockerfile in chosen:
            suffix = f"{arch}-{dockerfile.variant}" if len(chosen) > 1 else arch
            yield self._item(ItemRecord(spec, arch, dockerfile), suffix, reason)

    def _item(self, record: ItemRecord, suffix: str, skip: str) -> ModelItem:
        shared = self._shared
        marks = shared.marks(record.spec)
        item = ModelItem.from_parent(
            self,
            name=f"{record.spec.name}[{suffix}]",
            record=record,
            # skipif, not skip: the summary folds `skip`-marked items per file and drops their line.
            marks=(*marks, pytest.mark.skipif(True, reason=skip)) if skip else marks,
            fixtureinfo=shared.fixtureinfo,  # None for the first item: pytest computes it then
        )
        shared.fixtureinfo = item._fixtureinfo
        # The computed info is shared; the list of names is the item's own, as a conftest may add to it.
        item.fixturenames = list(item.fixturenames)
        return item


def _candidates(spec: ModelSpec, dockerfiles: DockerfileCache, settings: Settings) -> list[Dockerfile]:
    """The card's Dockerfiles; with the context's MAD_CONTAINER_IMAGE none is needed, so none is an error."""
    try:
        return dockerfiles.candidates(spec)
    except ModelsFileError:
        if settings.context.container_image:
            return []
        raise


def warn_at(path: Path, line: int, message: str) -> None:
    """A collection warning located at the user's file, not at this plugin's code. `line` is 0-based,
    as an entry's lineno and pytest's locations are; the warning shows it 1-based, as editors do."""
    warnings.warn_explicit(pytest.PytestCollectionWarning(message), pytest.PytestCollectionWarning, str(path), line + 1)


def _warn_left_out(found: Sequence[Dockerfile], runtime: Runtime) -> None:
    """One collection warning per Dockerfile that no arch can get for want of a usable header."""
    for dockerfile in left_out(list(found)):
        if dockerfile.path not in runtime.warned_dockerfiles:
            runtime.warned_dockerfiles.add(dockerfile.path)
            problem = (
                f"left out: {dockerfile.header_problem} (name it <prefix>.<os>.<vendor>.Dockerfile or give it a header)"
            )
            warn_at(dockerfile.path, 0, f"{dockerfile.path}: {problem}")


def _warn_unused_fields(path: Path, specs: Sequence[ModelSpec], runtime: Runtime) -> None:
    """One collection warning per field name and session, naming a card that has it."""
    for spec in specs:
        for name in unused_fields(spec):
            if name not in runtime.warned_fields:
                runtime.warned_fields.add(name)
                warn_at(
                    path, spec.lineno, f"{path}: model '{spec.name}': field '{name}' is not used by pytest-madengine"
                )


def _dockerfile_filter(arch: str, settings: Settings) -> dict[str, str]:
    """What an arch's Dockerfiles must match: the guest OS and the arch's vendor (else the context's)."""
    vendor = vendor_of(arch) or settings.context.gpu_vendor
    return {"guest_os": settings.guest_os, **({"gpu_vendor": vendor} if vendor else {})}


class _SharedParts:
    """What the items of one models.json have in common, made once rather than per item: the fixture
    info of `model_test` (the same function under the same parent for all of them, shared as pytest
    shares it among the items of one parametrized test) and the marks of each (tags, timeout)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._settings = runtime.settings
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


class ModelItem(pytest.Function):
    """One model on one arch with one Dockerfile; a Function calling `model_test` with the item's fixtures."""

    def __init__(self, *, record: ItemRecord, marks: Sequence[pytest.MarkDecorator], **kwargs: Any) -> None:
        # A CallSpec makes this a parametrized item (`name[arch]`) for pytest's structured node ids,
        # which `--lf` compares; a bare name with brackets would never match a stored id.
        name = str(kwargs["name"])
        callspec = item_callspec(name[name.index("[") + 1 : -1])
        super().__init__(callobj=model_test, callspec=callspec, originalname=record.spec.name, **kwargs)
        self.record = record
        for mark in marks:
            self.add_marker(mark)

    @property
    def spec(self) -> ModelSpec:
        return self.record.spec

    @property
    def arch(self) -> str:
        return self.record.arch

    @property
    def dockerfile(self) -> Dockerfile | None:
        return self.record.dockerfile

    def select_args(self, extra_args: str) -> None:
        """Tag selection's `name=value` tags: arguments for this run of the model."""
        self.record.spec = replace(self.record.spec, args=self.record.spec.args + extra_args)

    def variant(self, extra_args: str, taken: set[str]) -> ModelItem:
        """The same model once more with other selected args: its own item, its id naming the args and,
        when another item has that id already (`m:a=b` and `m:a_b`), a counter; `taken` holds the ids."""
        tag = re.sub(r"[^A-Za-z0-9_.=-]+", "_", extra_args.strip().replace("--", "")).strip("_") or "args"
        base, count = f"{self.name[:-1]}-{tag}", 1
        name = f"{base}]"
        where = self.nodeid[: -len(self.name)]
        while where + name in taken:
            count += 1
            name = f"{base}-{count}]"
        taken.add(where + name)
        record = ItemRecord(replace(self.spec, args=self.spec.args + extra_args), self.arch, self.dockerfile)
        assert isinstance(self.parent, pytest.Collector)
        # Public pytest API only: pytest.MarkDecorator(mark) is private and warns.
        marks = [getattr(pytest.mark, m.name)(*m.args, **m.kwargs) for m in self.own_markers]
        return ModelItem.from_parent(self.parent, name=name, record=record, marks=marks)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.spec.source, self.spec.lineno, self.name


def _slurm_skip(spec: ModelSpec, runtime: Runtime) -> str:
    """On a cluster: SLURM places the job; only a size no node has is known to be hopeless."""
    largest = runtime.capacity.largest
    if spec.n_gpus > largest:
        return f"needs {spec.n_gpus} GPUs per node, the largest node has {largest}"
    nodes = nnodes_of(spec.extra, runtime.settings.context.raw)
    fit = runtime.capacity.nodes_with(max(spec.n_gpus, 0))
    if nodes > fit:
        each = f" with {spec.n_gpus} GPU{'s' if spec.n_gpus != 1 else ''}" if spec.n_gpus > 0 else ""
        return f"needs {nodes} nodes{each}, the cluster has {fit}"
    return ""


def with_selected_args(item: pytest.Item, chosen: dict[str, list[str]], taken: set[str]) -> list[pytest.Item]:
    """The item once per selection of its model, in selection order. The selection without args (else
    the first) keeps the item's id, so `m[gfx942]` stays the plain run's; each other gets a variant
    whose id is unique among `taken`, the session's ids."""
    if not isinstance(item, ModelItem) or item.spec.name not in chosen:
        return [item]
    selections = chosen[item.spec.name]
    own = "" if "" in selections else selections[0]
    items: list[pytest.Item] = []
    for args in selections:
        if args == own:
            item.select_args(args)
            items.append(item)
        else:
            items.append(item.variant(args, taken))
    return items


def launcher(spec: ModelSpec) -> str:
    block = spec.extra.get("distributed")
    return str(block.get("launcher", "") if isinstance(block, dict) else spec.extra.get("launcher", "") or "")


def skip_reason(spec: ModelSpec, arch: str, runtime: Runtime) -> str:
    """Why an item cannot run here, decided at collection so that no fixture (no build) runs for it."""
    if launcher(spec) in ("slurm_multi", "slurm-multi") and not runtime.settings.build_only:
        # MAD's self-managed multi-node cards: sbatch scripts that start their own containers.
        if runtime.settings.slurm is None:
            return "needs SLURM (a slurm_multi card)"
        if not runtime.settings.slurm.shared_dir:
            return "a slurm_multi card needs --madengine-slurm-shared-dir (a directory every node sees)"
    pool, settings = runtime.pool, runtime.settings
    on_cluster = settings.slurm is not None and not settings.build_only
    runs = not settings.build_only and arch != "cpu" and spec.n_gpus != 0
    if runs and not on_cluster and not pool.explicit and arch not in runtime.detection.archs:
        return f"host has no {arch} GPU"
    # On a cluster the nodes' product is unknown here: the arch alone matches.
    listed = skipped_arch(spec.skip_gpu_arch, arch, "" if on_cluster else pool.product_name())
    if listed and not settings.ignore_skip_gpu_arch:
        return f"model not supported on {arch}: skip_gpu_arch lists {listed}"
    if on_cluster:
        return _slurm_skip(spec, runtime)
    wanted = pool.size if spec.n_gpus == -1 else spec.n_gpus
    if not settings.build_only and wanted > pool.size:
        return f"needs {wanted} GPU{'s' if wanted != 1 else ''}, the pool has {pool.size}"
    return ""

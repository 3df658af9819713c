"""Load and validate madengine's models.json into ModelSpec values (no pytest here).

Validation is per model so that one bad entry is reported on its own while its
neighbours still become items.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import MadengineError

KNOWN_FIELDS = frozenset(
    {
        "name",
        "dockerfile",
        "scripts",
        "args",
        "n_gpus",
        "tags",
        "timeout",
        "multiple_results",
        "skip_gpu_arch",
        "url",
        "owner",
        "training_precision",
        "dockercontext",
    }
)

# Fields of a card that the plugin reads beyond the parsed ones above (kept in ModelSpec.extra).
USED_EXTRA_FIELDS = frozenset(
    {"additional_docker_run_options", "cred", "max_regression", "higher_is_better", "distributed", "data"}
    | {"nnodes", "slurm", "env_vars"}  # on SLURM: nodes; a slurm_multi card's allocation and environment
)


def unused_fields(spec: ModelSpec) -> list[str]:
    """The card's fields nothing here reads: named once per session, so none is silently ignored."""
    return sorted(k for k in spec.extra if k not in USED_EXTRA_FIELDS)


TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ModelsFileError(MadengineError):
    """A models.json problem; its text names the file, the model and the field."""


@dataclass(frozen=True)
class ModelSpec:
    """One models.json entry with paths resolved against the models root."""

    name: str
    source: Path  # the models.json the entry came from
    lineno: int  # 0-based line of the entry in that file, for reportinfo
    root: Path  # the models root (holds the root models.json, docker/, scripts/)
    dockerfile: str  # prefix, relative to root, as madengine re-bases it
    scripts: str  # relative to root
    args: str = ""
    n_gpus: int = -1
    tags: tuple[str, ...] = ()
    timeout: int = 0
    multiple_results: str = ""
    skip_gpu_arch: tuple[str, ...] = ()
    url: str = ""
    owner: str = ""
    training_precision: str = ""
    dockercontext: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def script_path(self) -> Path:
        return self.root / self.scripts


class BrokenEntry(NamedTuple):
    """An entry that cannot become a model. Its tags, when they parse, still select it (`-m`,
    --madengine-tags), so a job choosing by tag sees the card fail instead of silently dropping it."""

    name: str  # the model's name, or "#index"
    lineno: int
    message: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadedModels:
    """What one models.json yields: good specs and per-model errors, in file order."""

    specs: tuple[ModelSpec, ...]
    errors: tuple[BrokenEntry, ...]


def models_root_of(path: Path) -> tuple[Path, str]:
    """Return (models root, scope dir) for a models.json path.

    A `scripts/<dir>/models.json` below a directory that holds a root models.json
    belongs to that root, as in madengine's discovery.
    """
    parent = path.parent
    if parent.parent.name == "scripts" and (parent.parent.parent / "models.json").is_file():
        return parent.parent.parent, parent.name
    return parent, ""


# A JSON string (escapes included; unterminated at the end of the text) or a bracket: what _entry_lines walks.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def _entry_lines(text: str, count: int) -> list[int]:
    """Best-effort 0-based line of each top-level list entry, for locations. Walks strings and
    brackets, not characters, and counts newlines in C: big zoos hold thousands of entries."""
    lines: list[int] = []
    depth = 0
    line = 0
    counted = 0  # text[:counted] holds `line` newlines
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            if depth == 1 and token == "{":
                start = match.start()
                line += text.count("\n", counted, start)
                counted = start
                lines.append(line)
            depth += 1
        elif token in ("]", "}"):
            depth -= 1
    lines.extend([0] * (count - len(lines)))
    return lines


def _int_field(value: object, where: str, fieldname: str) -> int:
    if isinstance(value, bool):
        raise ModelsFileError(f"{where}: field '{fieldname}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ModelsFileError(f"{where}: field '{fieldname}' must be an integer, got {value!r}")


def _str_field(entry: Mapping[str, Any], key: str, where: str, required: bool = False) -> str:
    if key not in entry or entry[key] is None:
        if required:
            raise ModelsFileError(f"{where}: required field '{key}' is missing")
        return ""
    value = entry[key]
    if not isinstance(value, str):
        raise ModelsFileError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ModelsFileError(f"{where}: required field '{key}' is empty")
    return value


def _list_field(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """Accept a list of strings or a comma string, as madengine does for tags."""
    value = entry.get(key)
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(t.strip() for t in value if t.strip())
    raise ModelsFileError(f"{where}: field '{key}' must be a list of strings or a comma string")


def _rebase(scope: str, value: str) -> str:
    """madengine's normpath(join('scripts', dir, value)) for sub-directory models."""
    if not scope:
        return value
    return _normpath(f"scripts/{scope}/{value}")


def _normpath(value: str) -> str:
    parts: list[str] = []
    for part in value.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


@dataclass(frozen=True)
class Origin:
    """Where a models.json sits: its path, the zoo root its paths are relative to, and its sub-zoo
    scope (`pyt_train` for scripts/pyt_train/models.json; "" for the root's)."""

    source: Path
    root: Path
    scope: str = ""


def parse_entry(entry: object, origin: Origin, index: int, lineno: int, checked: set[str] | None = None) -> ModelSpec:
    """Validate one entry; raise ModelsFileError naming file, model and field. `checked`: the paths
    of earlier entries of the file already found inside the zoo (and scripts to exist), so models
    sharing a Dockerfile or a script resolve it once."""
    source, root, scope = origin.source, origin.root, origin.scope
    if not isinstance(entry, dict):
        raise ModelsFileError(f"{source}: entry #{index} must be a JSON object, got {type(entry).__name__}")
    raw_name = entry.get("name")
    label = f"model '{raw_name}'" if isinstance(raw_name, str) and raw_name else f"entry #{index}"
    where = f"{source}: {label}"
    name = _str_field(entry, "name", where, required=True).strip()
    if scope:
        name = f"{scope}/{name}"
    dockerfile = _rebase(scope, _str_field(entry, "dockerfile", where, required=True).strip())
    _check_path(root, dockerfile, where, "dockerfile", checked)
    scripts = _rebase(scope, _str_field(entry, "scripts", where, required=True).strip())
    _check_path(root, scripts, where, "scripts", checked, must_exist=True)
    args = _args_field(entry, where)
    tags = _tags_field(entry, where)
    n_gpus = _int_field(entry.get("n_gpus", -1), where, "n_gpus")
    if n_gpus < -1:
        raise ModelsFileError(f"{where}: field 'n_gpus' must be -1 (all) or >= 0, got {n_gpus}")
    timeout = _int_field(entry.get("timeout", 0) if entry.get("timeout") is not None else 0, where, "timeout")
    _check_baseline_fields(entry, where)
    dockercontext = _dockercontext_field(entry, where, scope, root)
    return ModelSpec(
        name=name,
        source=source,
        lineno=lineno,
        root=root,
        dockerfile=dockerfile,
        scripts=scripts,
        args=args,
        n_gpus=n_gpus,
        tags=tags,
        timeout=max(timeout, 0),
        multiple_results=_str_field(entry, "multiple_results", where).strip(),
        skip_gpu_arch=_list_field(entry, "skip_gpu_arch", where),
        url=_str_field(entry, "url", where),
        owner=_str_field(entry, "owner", where),
        training_precision=_str_field(entry, "training_precision", where),
        dockercontext=dockercontext,
        extra={k: v for k, v in entry.items() if k not in KNOWN_FIELDS},
    )


def inside_root(root: Path, value: str, where: str, fieldname: str) -> None:
    """A path of the card must stay in the zoo: `../../etc/hostname` would copy the host's /etc into
    the container. MAD's sub-zoo paths such as `../../docker/x` resolve inside the root and are fine."""
    target = (root / value).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ModelsFileError(f"{where}: field '{fieldname}' {value!r} leads out of the zoo ({root})")


def _check_path(
    root: Path, value: str, where: str, fieldname: str, checked: set[str] | None, must_exist: bool = False
) -> None:
    """inside_root (and, for must_exist, the path's existence), once per distinct value of a file."""
    key = f"{fieldname}:{value}"
    if checked is not None and key in checked:
        return
    inside_root(root, value, where, fieldname)
    if must_exist and not (root / value).exists():
        raise ModelsFileError(f"{where}: field '{fieldname}' points to {root / value}, which does not exist")
    if checked is not None:
        checked.add(key)


def _args_field(entry: Mapping[str, Any], where: str) -> str:
    """The args string, checked to split as the model's shell command line will."""
    args = _str_field(entry, "args", where)
    try:
        if args:  # most models have none
            shlex.split(args)
    except ValueError as exc:
        raise ModelsFileError(f"{where}: field 'args' cannot be split like a shell would: {exc}") from None
    return args


def _tags_field(entry: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """Tags become pytest markers, so each must be a valid marker name."""
    tags = _list_field(entry, "tags", where)
    for tag in tags:
        if not TAG_RE.fullmatch(tag):
            raise ModelsFileError(
                f"{where}: field 'tags': {tag!r} cannot be a pytest marker (letters, digits, '_', '-', '.', "
                "not starting with '_')"
            )
    return tags


def readable_tags(entry: object) -> tuple[str, ...]:
    """A broken entry's tags when they parse, else none."""
    if not isinstance(entry, dict):
        return ()
    try:
        return _tags_field(entry, "")
    except ModelsFileError:
        return ()


def parse_percent(text: str) -> float:
    """`5%` or `5` → 5.0."""
    value = str(text).strip().rstrip("%").strip()
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a percentage like 5%, got {text!r}") from None
    if number < 0:
        raise ValueError(f"a regression threshold must be >= 0, got {text!r}")
    return number


def _check_baseline_fields(entry: Mapping[str, Any], where: str) -> None:
    """Used only when comparing with a baseline, after the run; checked here so a typo fails at load."""
    if entry.get("max_regression") not in (None, ""):
        try:
            parse_percent(str(entry["max_regression"]))
        except ValueError as exc:
            raise ModelsFileError(f"{where}: field 'max_regression': {exc}") from None
    if "higher_is_better" in entry and not isinstance(entry["higher_is_better"], bool):
        raise ModelsFileError(f"{where}: field 'higher_is_better' must be true or false")


def _dockercontext_field(entry: Mapping[str, Any], where: str, scope: str, root: Path) -> str:
    dockercontext = _str_field(entry, "dockercontext", where)
    if dockercontext:
        dockercontext = _rebase(scope, dockercontext)
        inside_root(root, dockercontext, where, "dockercontext")
        if not (root / dockercontext).is_dir():
            raise ModelsFileError(
                f"{where}: field 'dockercontext' points to {root / dockercontext}, which is not a directory"
            )
    return dockercontext


def load_models(path: Path) -> LoadedModels:
    """Parse a models.json. File-level problems raise; per-model ones are collected."""
    root, scope = models_root_of(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelsFileError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelsFileError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, list):
        raise ModelsFileError(f"{path}: must hold a JSON list of models, got {type(data).__name__}")
    lines = _entry_lines(text, len(data))
    specs: list[ModelSpec] = []
    errors: list[BrokenEntry] = []
    seen: dict[str, int] = {}
    checked: set[str] = set()
    for index, entry in enumerate(data):
        try:
            spec = parse_entry(entry, Origin(path, root, scope), index, lines[index], checked)
        except ModelsFileError as exc:
            raw = entry.get("name") if isinstance(entry, dict) else None
            label = f"{scope}/{raw}" if scope and isinstance(raw, str) else raw
            name = label if isinstance(label, str) and label else f"#{index}"
            errors.append(BrokenEntry(name, lines[index], str(exc), readable_tags(entry)))
            continue
        if spec.name in seen:
            message = f"{path}: model '{spec.name}': field 'name' duplicates the model at entry #{seen[spec.name]}"
            errors.append(BrokenEntry(f"{spec.name}#dup{index}", spec.lineno, message, spec.tags))
            continue
        seen[spec.name] = index
        specs.append(spec)
    return LoadedModels(tuple(specs), tuple(errors))

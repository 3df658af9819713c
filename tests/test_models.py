"""models.json loading and validation, without pytest's collection."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_madengine.zoo.models import ModelsFileError, load_models, models_root_of


def write(root: Path, entries: object, rel: str = "models.json") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries, indent=2))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "scripts" / "m").mkdir(parents=True)
    (tmp_path / "scripts" / "m" / "run.sh").write_text("echo hi\n")
    return tmp_path


def entry(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "m", "dockerfile": "docker/dummy", "scripts": "scripts/m/run.sh", "args": ""}
    base.update(fields)
    return base


def test_fields_are_read_and_unknown_fields_kept(root: Path) -> None:
    path = write(
        root,
        [
            entry(
                n_gpus="8",
                tags="a, b",
                timeout=360,
                multiple_results="perf.csv",
                skip_gpu_arch="gfx908, A100",
                training_precision="fp16",
                url="https://example.invalid/repo.git",
                owner="me@example.com",
                data="dummy_data",
            )
        ],
    )
    (spec,) = load_models(path).specs
    assert spec.n_gpus == 8
    assert spec.tags == ("a", "b")
    assert spec.timeout == 360
    assert spec.multiple_results == "perf.csv"
    assert spec.skip_gpu_arch == ("gfx908", "A100")
    assert spec.training_precision == "fp16"
    assert spec.extra == {"data": "dummy_data"}
    assert spec.lineno == 1


def test_defaults_follow_madengine(root: Path) -> None:
    (spec,) = load_models(write(root, [{"name": "m", "dockerfile": "docker/d", "scripts": "scripts/m/run.sh"}])).specs
    assert (spec.n_gpus, spec.args, spec.tags, spec.timeout) == (-1, "", (), 0)


def test_n_gpus_minus_one_string_and_int(root: Path) -> None:
    loaded = load_models(write(root, [entry(name="a", n_gpus="-1"), entry(name="b", n_gpus=2)]))
    assert [s.n_gpus for s in loaded.specs] == [-1, 2]


def test_invalid_json_names_line_and_column(root: Path) -> None:
    path = write(root, '[\n  {"name": "m",\n   "dockerfile" "x"}\n]')
    with pytest.raises(ModelsFileError, match=r"models.json: invalid JSON at line 3, column \d+"):
        load_models(path)


def test_not_a_list(root: Path) -> None:
    with pytest.raises(ModelsFileError, match="must hold a JSON list"):
        load_models(write(root, {"name": "m"}))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": None}, r"entry #0: required field 'name' is missing"),
        ({"dockerfile": None}, r"model 'm': required field 'dockerfile' is missing"),
        ({"scripts": None}, r"model 'm': required field 'scripts' is missing"),
        ({"n_gpus": "two"}, r"model 'm': field 'n_gpus' must be an integer, got 'two'"),
        ({"n_gpus": "-3"}, r"model 'm': field 'n_gpus' must be -1 \(all\) or >= 0"),
        ({"timeout": "soon"}, r"model 'm': field 'timeout' must be an integer, got 'soon'"),
        ({"timeout": 1.5}, r"model 'm': field 'timeout' must be an integer"),
        (
            {"scripts": "scripts/m/missing.sh"},
            r"model 'm': field 'scripts' points to .*missing.sh, which does not exist",
        ),
        ({"tags": 3}, r"model 'm': field 'tags' must be a list of strings"),
        ({"args": ["x"]}, r"model 'm': field 'args' must be a string"),
    ],
)
def test_bad_model_is_reported_with_file_model_and_field(root: Path, fields: dict[str, object], message: str) -> None:
    bad = entry(**fields)
    for key, value in fields.items():
        if value is None:
            del bad[key]
    path = write(root, [bad, entry(name="good")])
    loaded = load_models(path)
    assert [s.name for s in loaded.specs] == ["good"]
    ((_, _, text, _),) = loaded.errors
    assert str(path) in text

    assert re.search(message, text), text


def test_duplicate_name_keeps_first_and_reports_second(root: Path) -> None:
    path = write(root, [entry(), entry(args="x")])
    loaded = load_models(path)
    assert [s.args for s in loaded.specs] == [""]
    ((_, line, text, _),) = loaded.errors
    assert "model 'm': field 'name' duplicates the model at entry #0" in text
    assert line > 0


def test_each_entry_knows_its_line(root: Path) -> None:
    """Brackets and quotes inside strings, nested lists and objects, and entries sharing a line do not
    move the line an entry is reported at."""
    model = '"dockerfile": "docker/d", "scripts": "scripts/m/run.sh"'
    text = (
        "[\n"
        f'  {{"name": "a", {model}, "args": "--x \\"{{[\\" ]}}"}},\n'
        "\n"
        f'  {{"name": "b", {model},\n'
        f'   "nested": [{{"k": "}}"}}, {{"k": "\\\\"}}, [1, [2]]]}}, {{"name": "c", {model}}},\n'
        f'  {{"name": "d", {model}, "note": "\\"["}}\n'
        "]"
    )
    loaded = load_models(write(root, text))
    assert [(s.name, s.lineno) for s in loaded.specs] == [("a", 1), ("b", 3), ("c", 4), ("d", 5)]
    assert loaded.specs[0].args == '--x "{[" ]}'


def test_models_sharing_a_script_each_have_it_checked(root: Path) -> None:
    """The script check is made once per path for the models sharing it: a missing one fails every
    model that names it, however often it recurs."""
    gone = "scripts/m/gone.sh"
    loaded = load_models(
        write(root, [entry(name="a"), entry(name="b", scripts=gone), entry(name="c"), entry(name="d", scripts=gone)])
    )
    assert [s.name for s in loaded.specs] == ["a", "c"]
    assert [(name, "which does not exist" in text) for name, _, text, _ in loaded.errors] == [("b", True), ("d", True)]


@pytest.mark.parametrize("args", ['--x "open', "--x \\"])
def test_args_a_shell_cannot_split_are_an_error(root: Path, args: str) -> None:
    loaded = load_models(write(root, [entry(args=args), entry(name="good", args="")]))
    assert [s.name for s in loaded.specs] == ["good"]
    ((name, _, text, _),) = loaded.errors
    assert name == "m"
    assert "model 'm': field 'args' cannot be split like a shell would: " in text


def test_subdirectory_models_are_prefixed_and_rebased(root: Path) -> None:
    write(root, [entry()])
    (root / "scripts" / "sub").mkdir()
    (root / "scripts" / "sub" / "run.sh").write_text("echo\n")
    path = write(root, [entry(name="x", dockerfile="../../docker/dummy", scripts="run.sh")], "scripts/sub/models.json")
    assert models_root_of(path) == (root, "sub")
    (spec,) = load_models(path).specs
    assert spec.name == "sub/x"
    assert spec.dockerfile == "docker/dummy"
    assert spec.scripts == "scripts/sub/run.sh"
    assert spec.root == root


def test_models_json_outside_a_zoo_is_its_own_root(tmp_path: Path) -> None:
    path = tmp_path / "scripts" / "x" / "models.json"
    path.parent.mkdir(parents=True)
    assert models_root_of(path) == (path.parent, "")


def test_workspace_follows_symlinked_directories(tmp_path: Path) -> None:
    """madengine copies with `cp -vLR`: a symlinked folder arrives with its files."""
    import io
    import tarfile

    from pytest_madengine.engine.container import workspace_archive
    from pytest_madengine.engine.executor import Workspace
    from pytest_madengine.zoo.models import ModelSpec

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "table.csv").write_text("x\n")
    script_dir = tmp_path / "scripts" / "m"
    script_dir.mkdir(parents=True)
    (script_dir / "run.sh").write_text("echo\n")
    (script_dir / "linked").symlink_to(tmp_path / "data", target_is_directory=True)
    spec = ModelSpec(
        name="m", source=tmp_path / "models.json", lineno=0, root=tmp_path, dockerfile="d", scripts="scripts/m/run.sh"
    )
    with tarfile.open(
        fileobj=io.BytesIO(workspace_archive(Workspace(spec.script_path.parent, spec.root / "scripts")))
    ) as tar:
        names = set(tar.getnames())
    assert "myworkspace/run_directory/linked/table.csv" in names
    assert "myworkspace/scripts/m/linked/table.csv" in names
    assert "myworkspace/run_directory/run.sh" in names

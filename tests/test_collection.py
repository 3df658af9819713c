"""Collection through pytest itself: ids, selection, markers, locations and errors."""

from __future__ import annotations

import pytest
from zoo import Zoo, read_perf

from pytest_madengine.nodes import ModelItem


@pytest.fixture
def two_models(zoo: Zoo) -> Zoo:
    zoo.dockerfile(vendors=("amd", "nvidia"))
    zoo.script("resnet/run.sh")
    zoo.script("bert/run.sh")
    zoo.models(
        [
            zoo.model("resnet", tags=["vision", "dummy_group-1"]),
            zoo.model("bert", tags="nlp"),
        ]
    )
    return zoo


def test_one_item_per_model_and_arch(pytester: pytest.Pytester, two_models: Zoo) -> None:
    result = pytester.runpytest("--madengine-arch", "gfx90a,gfx942", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "models.json::resnet[[]gfx90a[]]",
            "models.json::resnet[[]gfx942[]]",
            "models.json::bert[[]gfx90a[]]",
            "models.json::bert[[]gfx942[]]",
            "4 tests collected*",
        ]
    )
    assert result.ret == 0


def test_arch_option_repeats_and_ini_mirror(pytester: pytest.Pytester, two_models: Zoo) -> None:
    result = pytester.runpytest("--madengine-arch", "gfx90a", "--madengine-arch", "sm_90", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*resnet[[]gfx90a[]]", "*resnet[[]sm_90[]]", "*4 tests collected*"])
    pytester.makeini("[pytest]\nmadengine_arch = gfx942\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*resnet[[]gfx942[]]", "*2 tests collected*"])


def test_default_arch_on_a_host_without_gpus_is_cpu_with_every_variant(
    pytester: pytest.Pytester, two_models: Zoo
) -> None:
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["*resnet[[]cpu-ubuntu.amd[]]", "*resnet[[]cpu-ubuntu.nvidia[]]", "*4 tests collected*"]
    )


def test_unknown_arch_is_a_usage_error(pytester: pytest.Pytester, two_models: Zoo) -> None:
    result = pytester.runpytest("--madengine-arch", "banana", "--collect-only")
    result.stderr.fnmatch_lines(["*--madengine-arch: unknown GPU architecture 'banana'*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_k_and_m_select_like_pytest(pytester: pytest.Pytester, two_models: Zoo) -> None:
    result = pytester.runpytest("--madengine-arch", "gfx942", "--collect-only", "-q", "-k", "resnet")
    result.stdout.fnmatch_lines(["*resnet[[]gfx942[]]", "1/2 tests collected (1 deselected)*"])
    result = pytester.runpytest("--madengine-arch", "gfx942", "--collect-only", "-q", "-m", "nlp", "--strict-markers")
    result.stdout.fnmatch_lines(["*bert[[]gfx942[]]", "1/2 tests collected (1 deselected)*"])
    result = pytester.runpytest("--madengine-arch", "gfx942", "--collect-only", "-q", "-m", "dummy_group-1")
    result.stdout.fnmatch_lines(["*resnet[[]gfx942[]]", "1/2 tests collected (1 deselected)*"])
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.madengine*"])


def test_location_points_at_models_json(pytester: pytest.Pytester, two_models: Zoo) -> None:
    items, _ = pytester.inline_genitems("--madengine-arch", "gfx942")
    locations = {item.nodeid: item.location for item in items}
    assert locations["models.json::bert[gfx942]"][0] == "models.json"
    bert_line, resnet_line = locations["models.json::bert[gfx942]"][1], locations["models.json::resnet[gfx942]"][1]
    assert bert_line is not None and resnet_line is not None
    assert bert_line > resnet_line


def test_setup_plan_shows_the_fixtures(pytester: pytest.Pytester, two_models: Zoo) -> None:
    result = pytester.runpytest(
        "--madengine-arch", "gfx942", "--madengine-gpus", "none", "--setup-plan", "-k", "resnet"
    )
    result.stdout.fnmatch_lines(["*SETUP    F madengine_image*", "*SETUP    F madengine_gpus*", "*resnet[[]gfx942[]]*"])
    assert result.ret == 0


def test_each_item_carries_its_own_models_marks(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """Marks are made once per tag and per limit within a models.json: each item still carries its own
    model's tags, in order, then its own timeout mark."""
    zoo.script("m/run.sh")
    run = "scripts/m/run.sh"
    zoo.models(
        [
            zoo.model("a", script=run, tags=["nlp", "perf"], timeout=33),
            zoo.model("b", script=run, tags=["perf"]),
            zoo.model("c", script=run, tags="nlp", timeout=33),
            zoo.model("d", script=run, timeout=5),
            zoo.model("e", script=run, tags=["perf"], timeout=7),
            zoo.model("f", script=run, tags=["nlp", "perf"]),
        ]
    )
    pytester.makeini("[pytest]\nmadengine_timeout = 60\n")
    # A pool of one GPU: every item can run, so none carries the skipif mark of an item that cannot.
    items, _ = pytester.inline_genitems("--madengine-arch", "gfx90a,gfx942", "--madengine-gpus", "0")
    marks = {item.nodeid: [(m.name, m.args, m.kwargs) for m in item.iter_markers()] for item in items}
    expected = {
        "a": [("nlp", (), {}), ("perf", (), {}), ("timeout", (33,), {"func_only": True})],
        "b": [("perf", (), {}), ("timeout", (60,), {"func_only": True})],
        "c": [("nlp", (), {}), ("timeout", (33,), {"func_only": True})],
        "d": [("timeout", (5,), {"func_only": True})],
        "e": [("perf", (), {}), ("timeout", (7,), {"func_only": True})],
        "f": [("nlp", (), {}), ("perf", (), {}), ("timeout", (60,), {"func_only": True})],
    }
    assert marks == {f"models.json::{name}[{arch}]": m for name, m in expected.items() for arch in ("gfx90a", "gfx942")}
    items, _ = pytester.inline_genitems(
        "--madengine-arch", "gfx942", "--madengine-timeout", "0", "--madengine-gpus", "0"
    )
    assert {item.name: [m.name for m in item.iter_markers()] for item in items} == {
        "a[gfx942]": ["nlp", "perf"],
        "b[gfx942]": ["perf"],
        "c[gfx942]": ["nlp"],
        "d[gfx942]": [],
        "e[gfx942]": ["perf"],
        "f[gfx942]": ["nlp", "perf"],
    }


def test_fixtures_are_those_of_each_models_json_directory(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """The items of one models.json share one fixture computation; a models.json below a conftest
    gets that conftest's autouse fixture, its neighbour above does not."""
    zoo.script("top/run.sh")
    zoo.script("sub/run.sh")
    zoo.models([zoo.model("top"), zoo.model("top2", script="scripts/top/run.sh")])
    zoo.models([{"name": "m2", "dockerfile": "../../docker/dummy", "scripts": "run.sh"}], "scripts/sub/models.json")
    (zoo.root / "scripts" / "sub" / "conftest.py").write_text(
        "import pytest\n\n\n@pytest.fixture(autouse=True)\ndef sub_only():\n    pass\n"
    )
    collected, _ = pytester.inline_genitems("--madengine-arch", "gfx90a,gfx942")
    items = [item for item in collected if isinstance(item, pytest.Function)]
    assert items == collected  # model items are pytest.Functions (narrows the type for what follows)
    names = {item.nodeid: set(item.fixturenames) for item in items}
    ours = {"madengine_image", "madengine_gpus", "madengine_container"}
    top = [names[f"models.json::{m}[{arch}]"] for m in ("top", "top2") for arch in ("gfx90a", "gfx942")]
    sub = [names[f"scripts/sub/models.json::sub/m2[{arch}]"] for arch in ("gfx90a", "gfx942")]
    assert all(ours <= n and "sub_only" not in n for n in top), top
    assert all(ours | {"sub_only"} <= n for n in sub), sub
    assert len(names) == 6
    # Computed once per models.json: one FuncFixtureInfo per file, however many items it has.
    per_file = {(item.path, id(item._fixtureinfo)) for item in items}
    assert len(per_file) == 2, per_file
    # ...while each item's list of fixture names is its own: a conftest adding to one adds to it alone.
    assert len({id(item.fixturenames) for item in items}) == len(items)


def test_subdirectory_models_json(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("top/run.sh")
    zoo.script("sub/run.sh")
    zoo.models([zoo.model("top")])
    zoo.models([{"name": "m2", "dockerfile": "../../docker/dummy", "scripts": "run.sh"}], "scripts/sub/models.json")
    result = pytester.runpytest("--madengine-arch", "gfx942", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["models.json::top[[]gfx942[]]", "scripts/sub/models.json::sub/m2[[]gfx942[]]"])


def test_variant_is_visible_when_several_dockerfiles_match(pytester: pytest.Pytester, zoo: Zoo) -> None:
    (zoo.root / "docker" / "multi.a.ubuntu.amd.Dockerfile").write_text("# CONTEXT {'gpu_vendor': 'AMD'}\nFROM x\n")
    (zoo.root / "docker" / "multi.b.ubuntu.amd.Dockerfile").write_text("# CONTEXT {'gpu_vendor': 'AMD'}\nFROM x\n")
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m", dockerfile="docker/multi")])
    result = pytester.runpytest("--madengine-arch", "gfx942", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*m[[]gfx942-a.ubuntu.amd[]]", "*m[[]gfx942-b.ubuntu.amd[]]"])


def test_no_dockerfile_for_the_vendor_is_a_skip_with_reason(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    result = pytester.runpytest("--madengine-arch", "sm_90", "-rs", "--madengine-perf-csv", "perf.csv")
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] models.json:*: no Dockerfile matching docker/dummy.* *NVIDIA*"])
    assert result.ret == 0


BAD_CASES = [
    ("[{", "models.json: invalid JSON at line 1, column 3"),
    ('[{"name": "bad", "scripts": "scripts/ok/run.sh"}]', "model 'bad': required field 'dockerfile' is missing"),
    (
        '[{"name": "bad", "dockerfile": "docker/dummy", "scripts": "scripts/ok/run.sh", "n_gpus": "x"}]',
        "model 'bad': field 'n_gpus' must be an integer, got 'x'",
    ),
    (
        '[{"name": "bad", "dockerfile": "docker/dummy", "scripts": "scripts/ok/run.sh", "timeout": "x"}]',
        "model 'bad': field 'timeout' must be an integer, got 'x'",
    ),
    (
        '[{"name": "bad", "dockerfile": "docker/none", "scripts": "scripts/ok/run.sh"}]',
        "model 'bad': field 'dockerfile' prefix 'docker/none' matches no file*",
    ),
    (
        '[{"name": "bad", "dockerfile": "docker/dummy", "scripts": "scripts/nope/run.sh"}]',
        "model 'bad': field 'scripts' points to *nope/run.sh, which does not exist",
    ),
    (
        '[{"name": "ok", "dockerfile": "docker/dummy", "scripts": "scripts/ok/run.sh"},'
        ' {"name": "ok", "dockerfile": "docker/dummy", "scripts": "scripts/ok/run.sh"}]',
        "model 'ok': field 'name' duplicates the model at entry #0",
    ),
]


def other_good_zoo(zoo: Zoo) -> None:
    zoo.script("ok/run.sh")
    (zoo.root / "other").mkdir()
    (zoo.root / "other" / "docker").mkdir()
    (zoo.root / "other" / "scripts" / "g").mkdir(parents=True)
    (zoo.root / "other" / "scripts" / "g" / "run.sh").write_text("echo\n")
    (zoo.root / "other" / "docker" / "g.ubuntu.amd.Dockerfile").write_text("FROM x\n")
    (zoo.root / "other" / "models.json").write_text(
        '[{"name": "good", "dockerfile": "docker/g", "scripts": "scripts/g/run.sh"}]'
    )


def test_an_unreadable_models_json_is_a_clear_collection_error(pytester: pytest.Pytester, zoo: Zoo) -> None:
    other_good_zoo(zoo)
    (zoo.root / "models.json").write_text("[{")
    result = pytester.runpytest("--madengine-arch", "gfx942", "--collect-only", "-q")
    output = result.stdout.str()
    result.stdout.fnmatch_lines(["*models.json: invalid JSON at line 1, column 3*"])
    assert "Traceback" not in output and "pytest_madengine" not in output
    assert "other/models.json::good[gfx942]" in output
    assert result.ret == pytest.ExitCode.INTERRUPTED


@pytest.mark.parametrize(("text", "message"), BAD_CASES[1:])
def test_a_broken_card_is_an_item_that_errors_with_a_clear_message(
    pytester: pytest.Pytester, zoo: Zoo, text: str, message: str
) -> None:
    other_good_zoo(zoo)
    (zoo.root / "models.json").write_text(text)
    collected = pytester.runpytest("--madengine-arch", "gfx942", "--collect-only", "-q")
    output = collected.stdout.str()
    collected.stdout.fnmatch_lines([f"*PytestCollectionWarning: broken card: *{message}*"])
    assert "Traceback" not in output and "pytest_madengine" not in output
    assert "other/models.json::good[gfx942]" in output
    assert collected.ret == pytest.ExitCode.OK
    result = pytester.runpytest("--madengine-arch", "gfx942", "--madengine-build-only", "-k", "bad or dup")
    result.stdout.fnmatch_lines([f"*{message}*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_each_selection_of_a_model_gets_its_own_id(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """`m:a=b` and `m:a_b` would both be named `a_b`: the second gets a counter. The selection without
    args keeps the plain id wherever it comes."""
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    tags = ("--madengine-tags", "m:a=b", "--madengine-tags", "m", "--madengine-tags", "m:a_b")
    result = pytester.runpytest("--madengine-arch", "gfx942", *tags, "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["models.json::m[[]gfx942-a_b[]]", "models.json::m[[]gfx942[]]", "models.json::m[[]gfx942-a_b-2[]]"]
    )
    assert "PytestDeprecationWarning" not in result.stdout.str()  # variants are made with public API only
    (finished,) = pytester.inline_run("--madengine-arch", "gfx942", *tags, "--collect-only").getcalls(
        "pytest_collection_finish"
    )
    items = finished.session.items  # as selection left them (inline_genitems gives them before)
    assert [(item.name, item.spec.args) for item in items if isinstance(item, ModelItem)] == [
        ("m[gfx942-a_b]", " --a b"),
        ("m[gfx942]", ""),
        ("m[gfx942-a_b-2]", " --a_b"),
    ]


def test_a_broken_card_keeps_its_tags_for_selection(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """A job selecting by tag sees its broken cards fail instead of silently dropping them: a card that
    does not parse (bad n_gpus) and one whose Dockerfile is missing keep their tags."""
    zoo.script("ok/run.sh")
    run = "scripts/ok/run.sh"
    zoo.models(
        [
            zoo.model("ok", script=run),
            zoo.model("unparsed", script=run, n_gpus="x", tags=["serving"]),
            zoo.model("lost", script=run, dockerfile="docker/nothing", tags="serving,llm"),
        ]
    )
    args = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "-p", "no:cacheprovider")
    for selection in (("-m", "serving", "--strict-markers"), ("--madengine-tags", "serving")):
        result = pytester.runpytest_subprocess(*args, *selection, timeout=300)
        result.assert_outcomes(errors=2)
        result.stdout.fnmatch_lines(
            [
                "*ERROR at setup of unparsed[[]gfx942[]]*",
                "*model 'unparsed': field 'n_gpus' must be an integer*",
                "*ERROR at setup of lost[[]gfx942[]]*",
            ]
        )
        assert result.ret == pytest.ExitCode.TESTS_FAILED
    result = pytester.runpytest_subprocess(*args, "--madengine-tags", "lost", "-m", "llm", timeout=300)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of lost[[]gfx942[]]*", "*field 'dockerfile' prefix*matches no file*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result = pytester.runpytest_subprocess(*args, "-m", "not serving", timeout=300)
    result.assert_outcomes(passed=1, deselected=2)
    assert result.ret == pytest.ExitCode.OK


def test_a_bad_model_does_not_hide_its_neighbours(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("ok/run.sh")
    path = zoo.models(
        [zoo.model("ok", script="scripts/ok/run.sh"), zoo.model("bad", script="scripts/ok/run.sh", n_gpus="x")]
    )
    result = pytester.runpytest("--madengine-arch", "gfx942", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["models.json::ok[[]gfx942[]]", "models.json::bad[[]gfx942[]]"])
    # The warning points at the line of the card's `{` (1-based, as an editor counts).
    lines = path.read_text().splitlines()
    brace = next(n for n, line in enumerate(lines, 1) if '"name": "bad"' in line) - 1
    assert lines[brace - 1].strip() == "{"
    result.stdout.fnmatch_lines(
        [f"*models.json:{brace}: PytestCollectionWarning: broken card: *model 'bad': field 'n_gpus'*"]
    )


def test_a_dockerfile_or_context_outside_the_zoo_is_a_broken_card(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """The outside Dockerfile and context exist and would build: only the root check keeps them out. A
    sub-zoo's `../../docker/...` and `../..` resolve inside the root and run."""
    outside = Zoo(pytester.path.parent / f"{pytester.path.name}-outside")
    outside.dockerfile()
    away = f"../{outside.root.name}"
    zoo.script("ok/run.sh")
    run = "scripts/ok/run.sh"
    zoo.models(
        [
            zoo.model("far_file", script=run, dockerfile=f"{away}/docker/dummy"),
            zoo.model("far_context", script=run, dockercontext=away),
        ]
    )
    zoo.script("sub/run.sh")
    zoo.models(
        [{"name": "near", "dockerfile": "../../docker/dummy", "dockercontext": "../..", "scripts": "run.sh"}],
        "scripts/sub/models.json",
    )
    args = ("--madengine-arch", "gfx942,gfx90a", "--madengine-gpus", "none", "-p", "no:cacheprovider")
    result = pytester.runpytest_subprocess(*args, "--madengine-perf-csv", "perf.csv", "-rA", timeout=300)
    result.assert_outcomes(passed=2, errors=4)
    result.stdout.fnmatch_lines(["*PASSED*sub/near[[]gfx942[]]*"])
    for item, field, value in (
        ("far_file", "dockerfile", f"{away}/docker/dummy"),
        ("far_context", "dockercontext", away),
    ):
        for arch in ("gfx942", "gfx90a"):
            result.stdout.fnmatch_lines(
                [
                    f"*ERROR at setup of {item}[[]{arch}[]]*",
                    f"{pytester.path}/models.json: model '{item}': field '{field}' '{value}' leads out of the zoo*",
                ]
            )
    assert "Traceback" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    rows = read_perf(pytester.path / "perf.csv")
    assert {(r["model"], r["gpu_architecture"]): (r["status"], r["reason"]) for r in rows if "far" in r["model"]} == {
        (model, arch): ("FAILURE", "invalid model")
        for model in ("far_file", "far_context")
        for arch in ("gfx942", "gfx90a")
    }
    assert {r["status"] for r in rows if r["model"] == "sub/near"} == {"SUCCESS"}


def test_a_models_json_that_is_not_a_list_is_a_collection_error_others_can_continue_past(
    pytester: pytest.Pytester, zoo: Zoo
) -> None:
    (zoo.root / "models.json").write_text('{"name": "m", "dockerfile": "docker/dummy", "scripts": "x"}')
    other = Zoo(pytester.path / "other")
    other.dockerfile()
    other.script("good/run.sh")
    other.models([other.model("good")])
    args = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "-p", "no:cacheprovider")
    collected = pytester.runpytest_subprocess(*args, "--collect-only", "-q", timeout=300)
    collected.stdout.fnmatch_lines(["*ERROR collecting models.json*", "*models.json: must hold a JSON list of models*"])
    assert "Traceback" not in collected.stdout.str()
    assert collected.ret == pytest.ExitCode.INTERRUPTED
    result = pytester.runpytest_subprocess(
        *args, "--madengine-perf-csv", "perf.csv", "--continue-on-collection-errors", timeout=300
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*models.json: must hold a JSON list of models, got dict*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert [(r["model"], r["status"]) for r in read_perf(pytester.path / "perf.csv")] == [("good", "SUCCESS")]


def test_a_prefix_file_without_exact_name_or_usable_header_is_left_out_with_a_warning(
    pytester: pytest.Pytester, zoo: Zoo
) -> None:
    """No `<prefix>.<os>.<vendor>.Dockerfile` for `docker/old`: the header decides, and files without a
    usable one are no wildcard. Two cards and two archs, still one warning per file."""
    zoo.dockerfile("old.legacy")  # a header for AMD
    docker_dir = zoo.root / "docker"
    (docker_dir / "old.bare.Dockerfile").write_text("FROM scratch\n")
    (docker_dir / "old.bent.Dockerfile").write_text("# CONTEXT {'gpu_vendor': \nFROM scratch\n")
    zoo.script("ok/run.sh")
    zoo.models([zoo.model(name, script="scripts/ok/run.sh", dockerfile="docker/old") for name in ("one", "two")])
    result = pytester.runpytest("--madengine-arch", "gfx942,gfx90a", "--collect-only", "-q")
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "models.json::one[[]gfx942[]]",
            "models.json::one[[]gfx90a[]]",
            "models.json::two[[]gfx942[]]",
            "models.json::two[[]gfx90a[]]",
        ]
    )
    assert output.count("::") == 4  # one item per card and arch: the legacy file's, no variant per file
    for name, problem in (("bare", "no '# CONTEXT' header"), ("bent", "not a Python dict literal")):
        path = docker_dir / f"old.{name}.Dockerfile"
        result.stdout.fnmatch_lines([f"*{path}:1: PytestCollectionWarning: {path}: left out: *{problem}*"])
        assert output.count(f"PytestCollectionWarning: {path}: left out") == 1
    assert "old.legacy" not in output  # the usable file warns of nothing
    assert result.ret == pytest.ExitCode.OK

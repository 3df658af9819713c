"""Hookspecs from a conftest.py, madengine's additional context, and madengine's tag selection."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import docker
import pytest
from zoo import EngineEvents, Zoo, labelled_containers, read_perf, run_id_of, wait_until

from pytest_madengine.zoo.context import ContextError, build_context, parse_text
from pytest_madengine.zoo.models import ModelSpec
from pytest_madengine.zoo.tags import TagError, parse_selectors, select

BASE = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "--madengine-perf-csv", "perf.csv")

CONFTEST = """
import json, os
from pathlib import Path
from pytest_madengine import Result

def pytest_madengine_build_args(spec, arch):
    return {"FROM_HOOK": f"{spec.name}-{arch}"}

def pytest_madengine_container_options(item, spec, options):
    options["environment"]["FROM_OPTIONS_HOOK"] = item.name
    options["labels"]["team"] = "perf"

def pytest_madengine_parse_result(item, log, workdir):
    path = Path(workdir) / "score.json"
    if not path.exists():
        return None
    score = json.loads(path.read_text())
    return [Result(model=item.spec.name, performance=str(score["value"]), metric=score["unit"], status="SUCCESS")]

def pytest_madengine_result(item, result):
    with open(os.environ["RESULT_SINK"], "a") as sink:
        sink.write(json.dumps({"nodeid": item.nodeid, "model": result["model"], "status": result["status"]}) + "\\n")

class Broken:
    def pytest_madengine_result(self, item, result):
        raise RuntimeError("database is down")

def pytest_configure(config):
    config.pluginmanager.register(Broken(), "broken-uploader")
"""


@pytest.fixture
def hooked(zoo: Zoo, pytester: pytest.Pytester) -> Zoo:
    zoo.dockerfile(
        "hook",
        body='FROM pytest-madengine/busybox:latest\nARG FROM_HOOK=none\nRUN echo "$FROM_HOOK" > /from_hook\n',
    )
    zoo.script(
        "m/run.sh",
        "#!/bin/bash\necho \"build=$(cat /from_hook) env=$FROM_OPTIONS_HOOK\"\necho 'performance: 1 from_log'\n",
    )
    zoo.script("custom/run.sh", '#!/bin/bash\necho \'{"value": 42.5, "unit": "custom_units"}\' > score.json\n')
    zoo.models([zoo.model("m", dockerfile="docker/hook"), zoo.model("custom", dockerfile="docker/hook")])
    pytester.makeconftest(CONFTEST)
    return zoo


@pytest.mark.parametrize("workers", [(), ("-n", "2")])
def test_every_hook_works_from_a_conftest(
    pytester: pytest.Pytester,
    hooked: Zoo,
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
    workers: tuple[str, ...],
) -> None:
    sink = pytester.path / "sink.jsonl"
    monkeypatch.setenv("RESULT_SINK", str(sink))
    with EngineEvents(docker_client) as events:
        result = pytester.runpytest_subprocess(
            *BASE, "-p", "no:cacheprovider", "-rA", "--junitxml=j.xml", "-o", "junit_logging=system-out", *workers
        )
        run_id = run_id_of(pytester.path)
        wait_until(lambda: len(events.of_run(run_id, "destroy")) == 2, 60, "the engine reports both containers gone")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["build=m-gfx942 env=m[[]gfx942[]]"])
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert (rows["custom"]["performance"], rows["custom"]["metric"]) == ("42.5", "custom_units")
    assert rows["m"]["metric"] == "from_log"
    uploaded = [json.loads(line) for line in sink.read_text().splitlines()]
    assert sorted((u["nodeid"], u["model"], u["status"]) for u in uploaded) == [
        ("models.json::custom[gfx942]", "custom", "SUCCESS"),
        ("models.json::m[gfx942]", "m", "SUCCESS"),
    ]
    result.stdout.fnmatch_lines(
        ["*pytest_madengine_result hook broken-uploader failed for models.json::*: RuntimeError: database is down*"]
    )
    # The engine ran one container per item, with the container_options hook's label, in the image
    # the JUnit file names.
    created = {
        e["Actor"]["Attributes"]["pytest-madengine.test"]: e["Actor"]["Attributes"]
        for e in events.of_run(run_id, "create")
    }
    assert sorted(created) == ["models.json::custom[gfx942]", "models.json::m[gfx942]"]
    assert {attributes.get("team") for attributes in created.values()} == {"perf"}
    assert labelled_containers(docker_client, run_id) == []
    # JUnit: each testcase carries its result as properties (the parse_result hook's for custom, the
    # log's for m), and, with junit_logging=system-out, the container's log.
    cases = {case.get("name", ""): case for case in ET.parse(pytester.path / "j.xml").getroot().iter("testcase")}
    assert sorted(cases) == ["custom[gfx942]", "m[gfx942]"]
    for model, performance, metric in (("custom", "42.5", "custom_units"), ("m", "1", "from_log")):
        case = cases[f"{model}[gfx942]"]
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert properties == {
            "gpus": "",
            "performance": performance,
            "metric": metric,
            "status": "SUCCESS",
            "gpu_architecture": "gfx942",
            "docker_image": created[f"models.json::{model}[gfx942]"]["image"],
        }
    assert "build=m-gfx942 env=m[gfx942]" in cases["m[gfx942]"].findtext("system-out", "")


def test_context_reaches_build_and_container(
    pytester: pytest.Pytester, zoo: Zoo, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path_factory.mktemp("shared")
    (shared / "dataset.txt").write_text("mounted-data\n")
    zoo.dockerfile(
        "ctx",
        body="ARG BASE_DOCKER=nothing:here\nFROM $BASE_DOCKER\nARG MAD_SECRETS_TOKEN=unset\n"
        "RUN echo ${#MAD_SECRETS_TOKEN} > /secret_len\n",
    )
    zoo.script("common/pre.sh", '#!/bin/bash\necho "pre ran with $1" && echo pre > order.txt\n')
    zoo.script("common/post.sh", '#!/bin/bash\necho "post ran after: $(cat order.txt)"\n')
    zoo.script(
        "m/run.sh",
        '#!/bin/bash\necho model >> order.txt\necho "env=$TEAM_VAR args=$*"\ncat /data/dataset.txt\n'
        "echo \"secret_len=$(cat /secret_len) env_secret_len=${#MAD_SECRETS_TOKEN}\"\necho 'performance: 3 x'\n",
    )
    zoo.models([zoo.model("m", dockerfile="docker/ctx", args="--from-models-json")])
    (pytester.path / "ctx.json").write_text(
        json.dumps(
            {
                "docker_env_vars": {"TEAM_VAR": "from-file"},
                "docker_build_arg": {"BASE_DOCKER": "nothing:from-file"},
                "model_args": "--from-file",
            }
        )
    )
    option = {
        "docker_env_vars": {"TEAM_VAR": "from-option"},
        "docker_mounts": {"/data": str(shared)},
        "docker_build_arg": {"BASE_DOCKER": "pytest-madengine/busybox:latest"},
        "pre_scripts": [{"path": "scripts/common/pre.sh", "args": "alpha beta"}],
        "post_scripts": [{"path": "scripts/common/post.sh"}],
        "surprise": 1,
    }
    monkeypatch.setenv("MAD_SECRETS_TOKEN", "hunter2-top-secret")
    result = pytester.runpytest_subprocess(
        *BASE,
        "-p",
        "no:cacheprovider",
        "-rA",
        "--madengine-context-file",
        "ctx.json",
        "--madengine-context",
        repr(option).replace("'", '"'),
        "--junitxml=j.xml",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*pre ran with alpha",
            "env=from-option args=--from-file",
            "mounted-data",
            "secret_len=18 env_secret_len=18",
            "*post ran after: pre*",
        ]
    )
    result.stdout.fnmatch_lines(["*madengine context: unknown key(s) ignored: surprise*"])
    (row,) = read_perf(pytester.path / "perf.csv")
    assert row["base_docker"] == "pytest-madengine/busybox:latest"
    assert row["args"] == "--from-models-json"
    everything = result.stdout.str() + (pytester.path / "perf.csv").read_text() + (pytester.path / "j.xml").read_text()
    everything += "".join(p.read_text() for p in (pytester.path / "madengine_logs").glob("*.build.log"))
    assert "hunter2-top-secret" not in everything


def test_a_malformed_context_is_a_usage_error(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    result = pytester.runpytest_subprocess(*BASE, "--madengine-context", "{not: valid")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*madengine context: --madengine-context is neither JSON nor a Python dict literal*"])
    result = pytester.runpytest_subprocess(*BASE, "--madengine-context", '{"pre_scripts": [{"args": "x"}]}')
    result.stderr.fnmatch_lines(["*context key 'pre_scripts' entry #0 needs a \"path\" string*"])


def test_context_parsing_units(tmp_path: pytest.TempPathFactory) -> None:
    assert parse_text("{'gpu_vendor': 'amd'}", "x") == {"gpu_vendor": "amd"}
    with pytest.raises(ContextError):
        parse_text("[1, 2]", "x")
    context = build_context('{"guest_os": "centos", "docker_gpus": "0-3"}', None)
    assert (context.guest_os, context.docker_gpus, context.unknown) == ("CENTOS", "0-3", ())


def spec(name: str, tags: tuple[str, ...] = ()) -> ModelSpec:
    from pathlib import Path

    return ModelSpec(name=name, source=Path("m.json"), lineno=0, root=Path("."), dockerfile="d", scripts="s", tags=tags)


def test_tag_selection_units() -> None:
    specs = [spec("dummy", ("dummies", "dummy_group_1")), spec("dummy2/model2", ("dummies",)), spec("other")]
    assert select(specs, parse_selectors(["dummy_group_1"])) == {"dummy": [""]}
    assert select(specs, parse_selectors(["dummy:batch-size=32"])) == {"dummy": [" --batch-size 32"]}
    assert set(select(specs, parse_selectors(["all"]))) == {"dummy", "dummy2/model2", "other"}
    assert select(specs, parse_selectors(["dummy2/dummies"])) == {"dummy2/model2": [""]}
    assert select(specs, parse_selectors(["dummy2/model2:batch-size=32:lr=0.1"])) == {
        "dummy2/model2": [" --batch-size 32 --lr 0.1"]
    }
    assert select(specs, parse_selectors(["dummies,other"])).keys() == {"dummy", "dummy2/model2", "other"}
    with pytest.raises(TagError, match="'nothing' matches no model"):
        select(specs, parse_selectors(["nothing"]))


def test_tags_select_and_append_args(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh", '#!/bin/bash\necho "args=$*"\necho "performance: 1 x"\n')
    zoo.models(
        [
            zoo.model("dummy", script="scripts/m/run.sh", tags=["dummies", "dummy_group_1"], args="--base 1"),
            zoo.model("dummy_multi", script="scripts/m/run.sh", tags=["dummies", "dummy_group_2"]),
            zoo.model("other", script="scripts/m/run.sh", tags=["misc"]),
        ]
    )
    result = pytester.runpytest_subprocess(*BASE, "-p", "no:cacheprovider", "--madengine-tags", "dummy_group_1", "-v")
    result.assert_outcomes(passed=1, deselected=2)
    result = pytester.runpytest_subprocess(
        *BASE, "-p", "no:cacheprovider", "--madengine-tags", "dummy:batch-size=32", "-rA", "-n", "2"
    )
    result.assert_outcomes(passed=1)  # workers deselect; xdist's controller reports only what ran
    result.stdout.fnmatch_lines(["args=--base 1 --batch-size 32"])
    rows = read_perf(pytester.path / "perf.csv")
    assert (rows[-1]["model"], rows[-1]["args"]) == ("dummy", "--base 1 --batch-size 32")
    result = pytester.runpytest_subprocess(*BASE, "--madengine-tags", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--madengine-tags 'nope' matches no model*"])


def test_a_model_skipped_by_a_hook_during_its_call_gets_a_skipped_row(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """A parse_result hook may skip the item after the run; its row says SKIPPED with the hook's reason,
    and the result hook still gets the row with the model's extra columns."""
    zoo.script("m/run.sh")
    zoo.script("x/run.sh", "#!/bin/bash\nprintf 'model,performance,metric,note\\nx,3,fps,hello\\n' > out.csv\n")
    zoo.models([zoo.model("m"), zoo.model("x", multiple_results="out.csv")])
    pytester.makeconftest(
        """
import json, pytest

def pytest_madengine_parse_result(item, log, workdir):
    if item.spec.name == "m":
        pytest.skip("not applicable here")

def pytest_madengine_result(item, result):
    with open("hooked.jsonl", "a") as sink:
        sink.write(json.dumps(result) + "\\n")
"""
    )
    result = pytester.runpytest_subprocess(*BASE, "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=1, skipped=1)
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert (rows["m"]["status"], rows["m"]["reason"]) == ("SKIPPED", "not applicable here")
    hooked = {r["model"]: r for r in map(json.loads, (pytester.path / "hooked.jsonl").read_text().splitlines())}
    assert hooked["x_x"]["extra.note"] == "hello" and hooked["m"]["status"] == "SKIPPED"

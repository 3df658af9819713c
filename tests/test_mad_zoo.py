"""A checkout shaped like MAD: sub-zoos only, overlapping prefixes, header-less exact Dockerfiles, broken
cards beside good ones; and images that follow their base."""

from __future__ import annotations

import io
import json

import docker
import pytest
from test_images import BASE_LABEL, SUITE_LABEL, UniqueBase
from zoo import BASE_IMAGE, LocalRegistry, Zoo, read_perf

ARCHS = ("--madengine-arch", "gfx942,sm_90", "--madengine-gpus", "none", "--madengine-perf-csv", "perf.csv")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*ARCHS, "-p", "no:cacheprovider", *args, timeout=300)


def mad_zoo(zoo: Zoo) -> None:
    """Root models.json `[]`; two sub-zoos; `docker/vllm` is one card's prefix and the start of another's file."""
    zoo.models([])
    docker_dir = zoo.root / "docker"
    body = f"FROM {BASE_IMAGE}\n"
    (docker_dir / "vllm.ubuntu.amd.Dockerfile").write_text(body)  # exact name, no header
    (docker_dir / "vllm.ubuntu.nvidia.Dockerfile").write_text(body)  # exact name, no header
    # A header without gpu_vendor: the exact name's `ubuntu.amd` keeps it from NVIDIA archs.
    (docker_dir / "vllm.dsv4.ubuntu.amd.Dockerfile").write_text("# CONTEXT {'guest_os': 'UBUNTU'}\n" + body)
    zoo.script("llm/run.sh")
    zoo.script("llm/serve.sh")
    zoo.models(
        [
            {"name": "vllm", "dockerfile": "../../docker/vllm", "scripts": "run.sh", "tags": ["serving"]},
            {"name": "vllm_dsv4", "dockerfile": "../../docker/vllm.dsv4", "scripts": "serve.sh"},
            {"name": "lost_dockerfile", "dockerfile": "../../docker/nothing", "scripts": "run.sh"},
            {"name": "lost_script", "dockerfile": "../../docker/vllm", "scripts": "missing.sh"},
        ],
        "scripts/llm/models.json",
    )
    zoo.script("escape/run.sh")
    zoo.models(
        [{"name": "sneaky", "dockerfile": "../../docker/vllm", "scripts": "../../../../etc/hostname"}],
        "scripts/escape/models.json",
    )


def test_broken_cards_error_alone_and_deselecting_them_passes(pytester: pytest.Pytester, zoo: Zoo) -> None:
    mad_zoo(zoo)
    result = run(pytester, "-rA")
    # Good cards: vllm gets exactly one file per arch (its own, by name), vllm_dsv4 only the AMD arch.
    result.assert_outcomes(passed=3, skipped=1, errors=6)
    result.stdout.fnmatch_lines(["*PASSED*llm/vllm[[]gfx942[]]*"])
    result.stdout.fnmatch_lines(["*PASSED*llm/vllm[[]sm_90[]]*"])
    for item, message in (
        ("llm/lost_dockerfile[[]gfx942[]]", "*model 'llm/lost_dockerfile': field 'dockerfile' prefix*matches no file*"),
        (
            "llm/lost_script[[]sm_90[]]",
            "*model 'lost_script': field 'scripts' points to*missing.sh, which does not exist",
        ),
        ("escape/sneaky[[]gfx942[]]", "*model 'sneaky': field 'scripts' '../../etc/hostname' leads out of the zoo*"),
    ):
        result.stdout.fnmatch_lines([f"*ERROR at setup of {item}*", message])
    assert "Traceback" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    rows = read_perf(pytester.path / "perf.csv")
    # The Dockerfile each item used: sm_90 never gets an AMD file, the overlapping prefix one file per arch.
    assert {(r["model"], r["gpu_architecture"]): r["docker_file"] for r in rows if r["docker_file"]} == {
        ("llm/vllm", "gfx942"): "docker/vllm.ubuntu.amd.Dockerfile",
        ("llm/vllm", "sm_90"): "docker/vllm.ubuntu.nvidia.Dockerfile",
        ("llm/vllm_dsv4", "gfx942"): "docker/vllm.dsv4.ubuntu.amd.Dockerfile",
    }
    broken = [r for r in rows if r["model"] in ("llm/lost_dockerfile", "llm/lost_script", "escape/sneaky")]
    assert len(broken) == 6 and {(r["status"], r["reason"]) for r in broken} == {("FAILURE", "invalid model")}
    # --collect-only names each broken card once.
    collected = run(pytester, "--collect-only", "-q")
    assert collected.stdout.str().count("PytestCollectionWarning: broken card:") == 3
    # Deselected, the broken cards are gone and the session passes.
    result = run(pytester, "-k", "not lost and not sneaky")
    result.assert_outcomes(passed=3, skipped=1)
    assert result.ret == pytest.ExitCode.OK
    result = run(pytester, "--madengine-tags", "serving")
    result.assert_outcomes(passed=2)


def test_a_model_selected_twice_with_other_args_runs_twice(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh", '#!/bin/bash\necho "args=[$*]"\necho "performance: 1 x"\n')
    zoo.models([zoo.model("m")])
    result = pytester.runpytest_subprocess(
        "--madengine-arch",
        "gfx942",
        "--madengine-gpus",
        "none",
        "--madengine-perf-csv",
        "perf.csv",
        "-p",
        "no:cacheprovider",
        "-rA",
        "--madengine-tags",
        "m",
        "--madengine-tags",
        "m:batch-size=32:fast",
        timeout=300,
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*PASSED models.json::m[[]gfx942[]]", "*PASSED models.json::m[[]gfx942-batch-size_32_fast[]]"]
    )
    assert sorted(r["args"] for r in read_perf(pytester.path / "perf.csv")) == ["", " --batch-size 32 --fast"]


@pytest.fixture
def base(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> UniqueBase:
    """This test's own base image (removed with what is built on it by tests/conftest.py)."""
    return UniqueBase(docker_client, tmp_path_factory.getbasetemp())


def builds_of(rows: list[dict[str, str]], prefix: str) -> dict[str, tuple[str, str]]:
    return {r["model"]: (r["docker_image"], r["build_duration"]) for r in rows if r["model"].startswith(prefix)}


def test_a_retagged_base_rebuilds_exactly_the_images_on_it(
    pytester: pytest.Pytester, zoo: Zoo, base: UniqueBase, docker_client: docker.DockerClient
) -> None:
    zoo.dockerfile("alpha", body=f"FROM {base.ref}\nRUN echo alpha > /which\n")
    zoo.dockerfile("beta", body=f"FROM {BASE_IMAGE}\nRUN echo beta > /which\n")
    zoo.script("m/run.sh", '#!/bin/bash\necho "performance: 1 $(cat /which)"\n')
    zoo.models(
        [
            zoo.model("a", script="scripts/m/run.sh", dockerfile="docker/alpha"),
            zoo.model("b", script="scripts/m/run.sh", dockerfile="docker/beta"),
        ]
    )
    args = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "-p", "no:cacheprovider")
    with base.watch() as engine:
        pytester.runpytest_subprocess(*args, "--madengine-perf-csv", "1.csv", timeout=300).assert_outcomes(passed=2)
        first = engine.builds()
        assert len(first) == 1  # alpha's image; beta's is on another base
        pytester.runpytest_subprocess(*args, "--madengine-perf-csv", "2.csv", timeout=300).assert_outcomes(passed=2)
        assert engine.builds() == first  # an unchanged base rebuilds nothing
        # The base's name now points at another image.
        changed, _ = docker_client.images.build(
            fileobj=io.BytesIO(f"FROM {BASE_IMAGE}\nLABEL changed=yes\n".encode()),
            labels={BASE_LABEL: base.marker, SUITE_LABEL: str(pytester.path.parent)},
            tag=base.ref,
            rm=True,
        )
        pytester.runpytest_subprocess(*args, "--madengine-perf-csv", "3.csv", timeout=300).assert_outcomes(passed=2)
        third = engine.builds()
    assert len(third - first) == 1  # alpha rebuilt, on the new base
    before, after = read_perf(pytester.path / "2.csv"), read_perf(pytester.path / "3.csv")
    assert builds_of(after, "b") == builds_of(before, "b")  # beta reused as it was
    assert builds_of(after, "a")["a"][0] != builds_of(before, "a")["a"][0]
    # The base each session actually used, as the engine names it (no registry digest: its id).
    assert {(r["base_docker"], r["docker_sha"]) for r in before if r["model"] == "a"} == {(base.ref, base.image_id)}
    assert {(r["base_docker"], r["docker_sha"]) for r in after if r["model"] == "a"} == {(base.ref, changed.id)}
    assert changed.id != base.image_id


def zoo_on_a_registry_base(
    zoo: Zoo,
    registry: LocalRegistry,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
    base: UniqueBase,
) -> tuple[str, dict[str, str]]:
    """One model on docker/alpha, FROM this test's base pushed to the local registry: (its name there, auth)."""
    monkeypatch.setenv("MAD_DOCKERHUB_USER", registry.user)
    monkeypatch.setenv("MAD_DOCKERHUB_PASSWORD", registry.password)
    auth = {"username": registry.user, "password": registry.password}
    remote = f"{registry.host}/bases/m:{base.marker}"
    docker_client.images.get(base.ref).tag(remote)
    docker_client.images.push(remote, auth_config=auth)
    zoo.dockerfile("alpha", body=f"FROM {remote}\nRUN echo alpha > /which\n")
    zoo.script("m/run.sh", '#!/bin/bash\necho "performance: 1 $(cat /which)"\n')
    zoo.models([zoo.model("a", script="scripts/m/run.sh", dockerfile="docker/alpha")])
    (zoo.root / "credential.json").write_text(json.dumps({registry.host: auth}))
    return remote, auth


def test_pull_refreshes_the_base_from_its_registry(
    pytester: pytest.Pytester,
    zoo: Zoo,
    registry: LocalRegistry,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
    base: UniqueBase,
) -> None:
    remote, auth = zoo_on_a_registry_base(zoo, registry, docker_client, monkeypatch, base)
    args = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "-p", "no:cacheprovider")
    pytester.runpytest_subprocess(*args, "--madengine-perf-csv", "1.csv", timeout=300).assert_outcomes(passed=1)
    # The registry gets a new image under the same name; this host keeps the old one.
    old = docker_client.images.get(remote).id
    newer, _ = docker_client.images.build(
        fileobj=io.BytesIO(f"FROM {BASE_IMAGE}\nLABEL newer=yes\n".encode()),
        labels={BASE_LABEL: base.marker, SUITE_LABEL: str(pytester.path.parent)},
        tag=remote,
        rm=True,
    )
    docker_client.images.push(remote, auth_config=auth)
    docker_client.api.tag(old, remote.rsplit(":", 1)[0], remote.rsplit(":", 1)[1])
    pytester.runpytest_subprocess(*args, "--madengine-perf-csv", "2.csv", timeout=300).assert_outcomes(passed=1)
    pytester.runpytest_subprocess(
        *args, "--madengine-perf-csv", "3.csv", "--madengine-pull", timeout=300
    ).assert_outcomes(passed=1)
    first, second, third = (read_perf(pytester.path / f"{n}.csv")[0] for n in (1, 2, 3))
    assert second["docker_image"] == first["docker_image"] and second["build_duration"] == "0"  # no pull: reused
    assert third["docker_image"] != first["docker_image"]  # pulled a changed base: rebuilt
    assert docker_client.images.get(remote).id == newer.id


def test_pull_with_an_unchanged_base_rebuilds_nothing(
    pytester: pytest.Pytester,
    zoo: Zoo,
    registry: LocalRegistry,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
    base: UniqueBase,
) -> None:
    remote, _ = zoo_on_a_registry_base(zoo, registry, docker_client, monkeypatch, base)
    args = ("--madengine-arch", "gfx942", "--madengine-gpus", "none", "-p", "no:cacheprovider", "--madengine-pull")
    with base.watch() as engine:
        pytester.runpytest_subprocess(*args, "--madengine-perf-csv", "1.csv", timeout=300).assert_outcomes(passed=1)
        first = engine.builds()
        assert sum(first.values()) == 1
        pytester.runpytest_subprocess(*args, "--madengine-perf-csv", "2.csv", timeout=300).assert_outcomes(passed=1)
        assert engine.builds() == first  # the pull found nothing new: no build
    (one,), (two,) = (read_perf(pytester.path / f"{n}.csv") for n in (1, 2))
    assert (two["docker_image"], two["build_duration"]) == (one["docker_image"], "0")
    assert two["base_docker"] == remote

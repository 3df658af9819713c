"""Images: build once, skip unchanged, build here and run there, push to and pull from a registry."""

from __future__ import annotations

import contextlib
import json

import docker
import pytest
from zoo import LocalRegistry, Zoo, labelled_containers, read_perf

ARCHS = ("--madengine-arch", "gfx90a,gfx942", "--madengine-gpus", "none")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider", timeout=300)


@pytest.fixture
def two_dockerfiles(zoo: Zoo, pytester: pytest.Pytester) -> Zoo:
    # The tmp path in a comment makes these images this test's own (no reuse from other tests).
    for name in ("alpha", "beta"):
        zoo.dockerfile(
            name, body=f"FROM pytest-madengine/busybox:latest\nRUN echo {name} > /which\n# {pytester.path}\n"
        )
    zoo.script("m/run.sh", '#!/bin/bash\necho "performance: 1 $(cat /which)"\n')
    zoo.models(
        [zoo.model(f"a{i}", script="scripts/m/run.sh", dockerfile="docker/alpha") for i in range(3)]
        + [zoo.model(f"b{i}", script="scripts/m/run.sh", dockerfile="docker/beta") for i in range(3)]
    )
    return zoo


def builds(rows: list[dict[str, str]]) -> dict[str, set[str]]:
    """docker_image -> build durations seen: '0' means reused from an earlier session."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        seen.setdefault(row["docker_image"], set()).add(row["build_duration"])
    return seen


def test_built_once_per_session_and_not_at_all_when_unchanged(pytester: pytest.Pytester, two_dockerfiles: Zoo) -> None:
    run(pytester, *ARCHS, "-n", "4", "--madengine-perf-csv", "first.csv").assert_outcomes(passed=12)
    first = read_perf(pytester.path / "first.csv")
    images = builds(first)
    assert len(images) == 4  # 2 Dockerfiles x 2 archs, under -n 4
    assert all(len(d) == 1 and d != {"0"} for d in images.values())
    assert {r["docker_image"].split(":")[0] for r in first} == {
        "madengine/alpha.ubuntu.amd",
        "madengine/beta.ubuntu.amd",
    }
    logs = sorted(p.name.rsplit(".", 3)[0] for p in (pytester.path / "madengine_logs").glob("*.build.log"))
    assert logs == [f"{n}.ubuntu.amd.{a}" for n in ("alpha", "beta") for a in ("gfx90a", "gfx942")]
    run(pytester, *ARCHS, "-n", "4", "--madengine-perf-csv", "second.csv").assert_outcomes(passed=12)
    assert all(d == {"0"} for d in builds(read_perf(pytester.path / "second.csv")).values())


def test_one_changed_byte_rebuilds_exactly_its_images(pytester: pytest.Pytester, two_dockerfiles: Zoo) -> None:
    run(pytester, *ARCHS, "--madengine-perf-csv", "first.csv").assert_outcomes(passed=12)
    alpha = two_dockerfiles.root / "docker" / "alpha.ubuntu.amd.Dockerfile"
    alpha.write_text(alpha.read_text().replace("echo alpha", "echo alphA"))
    run(pytester, *ARCHS, "--madengine-perf-csv", "second.csv").assert_outcomes(passed=12)
    second = read_perf(pytester.path / "second.csv")
    rebuilt = {r["model"] for r in second if r["build_duration"] != "0"}
    assert rebuilt == {"a0", "a1", "a2"}
    assert {r["metric"] for r in second if r["model"].startswith("a")} == {"alphA"}
    result = run(pytester, *ARCHS, "--madengine-perf-csv", "third.csv", "--madengine-rebuild", "-k", "b0")
    result.assert_outcomes(passed=2)
    assert all(r["build_duration"] != "0" for r in read_perf(pytester.path / "third.csv"))


def test_verbose_shows_build_steps_as_they_go(pytester: pytest.Pytester, two_dockerfiles: Zoo) -> None:
    result = run(
        pytester, "--madengine-arch", "gfx942", "--madengine-gpus", "none", "-v", "-k", "a0", "--madengine-rebuild"
    )
    result.stdout.fnmatch_lines(
        ["[[]build[]] madengine/alpha.ubuntu.amd:gfx942-*: Step 1/*", "*a0[[]gfx942[]] PASSED*"]
    )


def test_build_here_push_and_run_there_from_the_manifest(
    pytester: pytest.Pytester,
    two_dockerfiles: Zoo,
    registry: LocalRegistry,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAD_DOCKERHUB_USER", registry.user)
    monkeypatch.setenv("MAD_DOCKERHUB_PASSWORD", registry.password)
    result = run(
        pytester,
        *ARCHS,
        "-n",
        "2",
        "--madengine-build-only",
        "--madengine-manifest-out",
        "build_manifest.json",
        "--madengine-registry",
        f"{registry.host}/mad",
        "--madengine-perf-csv",
        "build.csv",
    )
    result.assert_outcomes(passed=12)
    assert not (pytester.path / "build.csv").exists()  # nothing ran
    manifest = json.loads((pytester.path / "build_manifest.json").read_text())
    assert len(manifest["built_images"]) == 4 and len(manifest["built_models"]) == 12
    entry = manifest["built_models"]["a1[gfx90a]"]
    assert entry["model"] == "a1" and entry["gpu_architecture"] == "gfx90a"
    assert entry["registry_image"] == f"{registry.host}/mad/alpha.ubuntu.amd:{entry['docker_image'].split(':')[1]}"
    image_entry = manifest["built_images"][entry["docker_image"]]
    assert {
        "model",
        "docker_image",
        "dockerfile",
        "base_docker",
        "docker_sha",
        "build_duration",
        "gpu_architecture",
        "registry_image",
    } <= set(image_entry)
    assert sorted(image_entry["models"]) == ["a0", "a1", "a2"]

    for name, image_entry in manifest["built_images"].items():
        for reference in (image_entry["registry_image"], name):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(reference, force=True)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(name)
    # Another checkout: no docker/ directory at all, only the manifest and the scripts.
    (two_dockerfiles.root / "docker" / "alpha.ubuntu.amd.Dockerfile").write_text("FROM nothing:here\n")
    result = run(pytester, *ARCHS, "--madengine-manifest", "build_manifest.json", "--madengine-perf-csv", "run.csv")
    result.assert_outcomes(passed=12)
    rows = read_perf(pytester.path / "run.csv")
    assert {r["metric"] for r in rows} == {"alpha", "beta"}
    assert {r["build_duration"] for r in rows} == {"0"}
    assert labelled_containers(docker_client) == []
    out = result.stdout.str() + result.stderr.str()
    assert registry.password not in out


def test_a_model_missing_from_the_manifest_is_an_error_naming_it(
    pytester: pytest.Pytester, two_dockerfiles: Zoo
) -> None:
    (pytester.path / "m.json").write_text(json.dumps({"built_images": {}, "built_models": {}}))
    result = run(
        pytester,
        "--madengine-arch",
        "gfx942",
        "--madengine-gpus",
        "none",
        "-k",
        "a0",
        "--madengine-manifest",
        "m.json",
        "--madengine-perf-csv",
        "p.csv",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*model a0 (a0[[]gfx942[]]) is not in the manifest *m.json*"])
    assert "Traceback" not in result.stdout.str()


def test_a_wrong_password_is_a_clear_error_and_never_printed(
    pytester: pytest.Pytester, two_dockerfiles: Zoo, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "WrongPassw0rd-do-not-print-me"
    monkeypatch.setenv("MAD_DOCKERHUB_USER", registry.user)
    monkeypatch.setenv("MAD_DOCKERHUB_PASSWORD", wrong)
    result = run(
        pytester,
        "--madengine-arch",
        "gfx942",
        "--madengine-gpus",
        "none",
        "-k",
        "a0 or a1",
        "-rA",
        "--madengine-registry",
        f"{registry.host}/mad",
        "--madengine-perf-csv",
        "p.csv",
        "--junitxml",
        "j.xml",
        "-o",
        "junit_logging=all",
        "--madengine-manifest-out",
        "m.json",
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([f"*login to {registry.host} as {registry.user} failed*"])
    texts = [result.stdout.str(), result.stderr.str()]
    texts += [
        p.read_text(errors="replace")
        for p in pytester.path.rglob("*")
        if p.is_file() and p.suffix in (".csv", ".xml", ".log", ".json")
    ]
    assert all(wrong not in text for text in texts)
    assert sum("login to" in text for text in texts) >= 2


def test_cred_field_becomes_build_args(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.dockerfile(
        "creds",
        body="FROM pytest-madengine/busybox:latest\nARG MYCRED_USERNAME\nARG MYCRED_TOKEN\n"
        'RUN echo "$MYCRED_USERNAME:${#MYCRED_TOKEN}" > /cred\n',
    )
    zoo.script("m/run.sh", '#!/bin/bash\necho "performance: 1 $(cat /cred)"\n')
    zoo.models(
        [
            zoo.model("m", dockerfile="docker/creds", cred="MYCRED"),
            zoo.model("n", script="scripts/m/run.sh", dockerfile="docker/creds", cred="NOPE"),
        ]
    )
    (pytester.path / "credential.json").write_text(json.dumps({"MYCRED": {"username": "alice", "token": "abcdef"}}))
    result = run(pytester, "--madengine-arch", "gfx942", "--madengine-gpus", "none", "--madengine-perf-csv", "p.csv")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*model 'n': field 'cred' names 'NOPE', which *credential.json does not hold*"])
    assert read_perf(pytester.path / "p.csv")[0]["metric"] == "alice:6"

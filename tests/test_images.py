"""Images: build once, skip unchanged, build here and run there, push to and pull from a registry."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
from zoo import (
    BASE_IMAGE,
    RUN_LABEL,
    EngineEvents,
    LocalRegistry,
    Zoo,
    labelled_containers,
    read_perf,
    run_id_of,
    wait_until,
)

ARCHS = ("--madengine-arch", "gfx90a,gfx942", "--madengine-gpus", "none")
# Every file a session writes, so a test can look for a leaked password in all of them.
EVERY_OUTPUT = (
    *("--madengine-perf-csv", "p.csv", "--junitxml", "j.xml", "-o", "junit_logging=all"),
    *("--madengine-manifest-out", "m.json"),
)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider", timeout=300)


# Every image a test makes FROM its own base carries these labels (images inherit their base's labels,
# and so does every container the engine creates while building): BASE_LABEL scopes the engine's
# events to one test, SUITE_LABEL (the session's basetemp) lets tests/conftest.py remove the images.
BASE_LABEL = "pytest-madengine-tests.base"
SUITE_LABEL = "pytest-madengine-tests.basetemp"


class BuildWatch(EngineEvents):
    """The engine's own record of the builds FROM one test's base image, streamed while sessions run.

    The SDK builds with the classic builder: each build that ends tags its image (an image `tag` event,
    cached or not; reusing an image tags nothing), and each RUN step that executes runs in a container
    made from the previous layer (a `start`, then a `die` with the step's exit code). Containers of
    model runs carry the run label and are not build steps.
    """

    def __init__(self, client: docker.DockerClient, base: UniqueBase) -> None:
        super().__init__(client, filters={"label": f"{BASE_LABEL}={base.marker}"})
        self._client = client
        self._base = base
        self._syncs = 0

    def sync(self) -> None:
        """Wait until the engine has delivered every event so far: tag the base once more (an event of
        ours) and wait for it; events come in order."""
        self._syncs += 1
        name = f"{self._base.repository}:{self._base.marker}-sync{self._syncs}"
        self._client.images.get(self._base.ref).tag(name)
        wait_until(lambda: any(self._attrs(e).get("name") == name for e in list(self.events)), 30, "sync event")

    @staticmethod
    def _attrs(event: dict[str, Any]) -> dict[str, str]:
        return dict(event.get("Actor", {}).get("Attributes", {}))

    def builds(self) -> Counter[str]:
        """Builds that produced an image, per image tag (the plugin's own `madengine/` tags only)."""
        self.sync()
        return Counter(
            self._attrs(e)["name"]
            for e in list(self.events)
            if e.get("Type") == "image"
            and e.get("Action") == "tag"
            and self._attrs(e).get("name", "").startswith("madengine/")
        )

    def steps(self, failed: bool | None = None) -> int:
        """RUN steps the engine executed for builds (optionally only failed or only succeeded ones)."""
        self.sync()
        return sum(
            1
            for e in list(self.events)
            if e.get("Type") == "container"
            and e.get("Action") == "die"
            and RUN_LABEL not in self._attrs(e)
            and (failed is None or (self._attrs(e).get("exitCode") != "0") == failed)
        )


class UniqueBase:
    """A base image of one test's own: busybox plus a unique label, so its builds share no cache with
    any other test or session and the engine's events about them are this test's alone."""

    repository = "pytest-madengine-tests/base"

    def __init__(self, client: docker.DockerClient, basetemp: Path) -> None:
        self._client = client
        self.marker = uuid.uuid4().hex[:16]
        image, _ = client.images.build(
            fileobj=io.BytesIO(f"FROM {BASE_IMAGE}\n".encode()),
            labels={BASE_LABEL: self.marker, SUITE_LABEL: str(basetemp)},
            tag=f"{self.repository}:{self.marker}",
            pull=False,
            rm=True,
            forcerm=True,
        )
        self.ref = f"{self.repository}:{self.marker}"
        self.image_id = str(image.id)

    def watch(self) -> BuildWatch:
        return BuildWatch(self._client, self)


@pytest.fixture
def unique_base(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> UniqueBase:
    """Removed with everything built FROM it by the session's image cleanup (tests/conftest.py)."""
    return UniqueBase(docker_client, tmp_path_factory.getbasetemp())


@pytest.fixture
def two_dockerfiles(zoo: Zoo, unique_base: UniqueBase) -> Zoo:
    # FROM this test's own base: no reuse from other tests or sessions, and its builds are countable.
    for name in ("alpha", "beta"):
        zoo.dockerfile(name, body=f"FROM {unique_base.ref}\nRUN echo {name} > /which\n")
    zoo.script("m/run.sh", '#!/bin/bash\necho "performance: 1 $(cat /which)"\n')
    zoo.models(
        [zoo.model(f"a{i}", script="scripts/m/run.sh", dockerfile="docker/alpha") for i in range(3)]
        + [zoo.model(f"b{i}", script="scripts/m/run.sh", dockerfile="docker/beta") for i in range(3)]
    )
    return zoo


def image_repos(tags: Counter[str]) -> Counter[str]:
    """Builds per `<dockerfile base>:<arch>` (the content hash dropped from the tag)."""
    return Counter(f"{tag.split(':')[0]}:{tag.split(':')[1].split('-')[0]}" for tag in tags.elements())


ALL_FOUR = Counter(f"madengine/{n}.ubuntu.amd:{a}" for n in ("alpha", "beta") for a in ("gfx90a", "gfx942"))


def test_built_once_per_session_and_not_at_all_when_unchanged(
    pytester: pytest.Pytester, two_dockerfiles: Zoo, unique_base: UniqueBase
) -> None:
    with unique_base.watch() as engine:
        run(pytester, *ARCHS, "-n", "4", "--madengine-perf-csv", "first.csv").assert_outcomes(passed=12)
        first = engine.builds()
        # 2 Dockerfiles x 2 archs, each built exactly once by the engine for 12 items on 4 workers.
        assert image_repos(first) == ALL_FOUR
        assert {r["docker_image"] for r in read_perf(pytester.path / "first.csv")} == set(first)
        run(pytester, *ARCHS, "-n", "4", "--madengine-perf-csv", "second.csv").assert_outcomes(passed=12)
        assert engine.builds() == first  # the unchanged images of the first session are reused
    assert {r["docker_image"] for r in read_perf(pytester.path / "second.csv")} == set(first)


def test_one_changed_byte_rebuilds_exactly_its_images(
    pytester: pytest.Pytester, two_dockerfiles: Zoo, unique_base: UniqueBase
) -> None:
    alpha_images = Counter({"madengine/alpha.ubuntu.amd:gfx90a": 1, "madengine/alpha.ubuntu.amd:gfx942": 1})
    beta_images = Counter({"madengine/beta.ubuntu.amd:gfx90a": 1, "madengine/beta.ubuntu.amd:gfx942": 1})
    with unique_base.watch() as engine:
        run(pytester, *ARCHS, "--madengine-perf-csv", "first.csv").assert_outcomes(passed=12)
        first = engine.builds()
        alpha = two_dockerfiles.root / "docker" / "alpha.ubuntu.amd.Dockerfile"
        alpha.write_text(alpha.read_text().replace("echo alpha", "echo alphA"))
        run(pytester, *ARCHS, "--madengine-perf-csv", "second.csv").assert_outcomes(passed=12)
        second = engine.builds()
        assert image_repos(second - first) == alpha_images
        rows = read_perf(pytester.path / "second.csv")
        assert {r["metric"] for r in rows if r["model"].startswith("a")} == {"alphA"}
        result = run(pytester, *ARCHS, "--madengine-perf-csv", "third.csv", "--madengine-rebuild", "-k", "b0")
        result.assert_outcomes(passed=2)
        # --madengine-rebuild builds b0's (unchanged) images again, on both archs.
        assert image_repos(engine.builds() - second) == beta_images


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
    assert labelled_containers(docker_client, run_id_of(pytester.path)) == []
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
        *EVERY_OUTPUT,
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
    missing = "*models.json: model 'n': field 'cred' names 'NOPE', which *credential.json does not hold"
    # A `cred` credential.json lacks is a broken card, found at collection: one warning naming it.
    collected = run(pytester, "--madengine-arch", "gfx942", "--collect-only", "-q")
    collected.stdout.fnmatch_lines([f"*models.json:*: PytestCollectionWarning: broken card: {missing}"])
    assert collected.stdout.str().count("broken card:") == 1
    result = run(pytester, "--madengine-arch", "gfx942", "--madengine-gpus", "none", "--madengine-perf-csv", "p.csv")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of n[[]gfx942[]]*", missing])
    assert "Traceback" not in result.stdout.str()
    rows = {r["model"]: r for r in read_perf(pytester.path / "p.csv")}
    assert rows["m"]["metric"] == "alice:6"
    assert (rows["n"]["status"], rows["n"]["reason"]) == ("FAILURE", "invalid model")


ONE_ARCH = ("--madengine-arch", "gfx942", "--madengine-gpus", "none")


def test_items_share_an_image_only_when_their_build_args_match(
    pytester: pytest.Pytester, zoo: Zoo, unique_base: UniqueBase
) -> None:
    zoo.dockerfile("args", body=f'FROM {unique_base.ref}\nARG X=unset\nRUN echo "$X" > /x\n')
    zoo.script("m/run.sh", '#!/bin/bash\necho "performance: 1 $(cat /x)"\n')
    names = ("p0", "p1", "p2", "q0")
    zoo.models([zoo.model(n, script="scripts/m/run.sh", dockerfile="docker/args") for n in names])
    # A per-model build arg (the documented hook; it goes into the image's key): p* and q0 differ only there.
    pytester.makeconftest(
        "def pytest_madengine_build_args(spec, arch):\n"
        "    return {'X': 'one' if spec.name.startswith('p') else 'two'}\n"
    )
    with unique_base.watch() as engine:
        run(pytester, *ONE_ARCH, "-n", "2", "--madengine-perf-csv", "p.csv").assert_outcomes(passed=4)
        builds = engine.builds()
        steps = engine.steps()
    # From the engine: two images (the args differ), each built exactly once for all its items on both workers.
    assert sorted(builds.values()) == [1, 1]
    assert steps == 2
    rows = read_perf(pytester.path / "p.csv")
    assert {r["docker_image"] for r in rows} == set(builds)
    assert {r["model"]: r["metric"] for r in rows} == {"p0": "one", "p1": "one", "p2": "one", "q0": "two"}


def test_a_failing_image_is_built_once_and_every_item_errors_with_its_log_tail(
    pytester: pytest.Pytester, zoo: Zoo, unique_base: UniqueBase
) -> None:
    # `$((6*7))` is computed by the step: the tail shows the build's output, not only the Dockerfile's text.
    zoo.dockerfile("broken", body=f'FROM {unique_base.ref}\nRUN echo "fail-{unique_base.marker}-$((6*7))" && false\n')
    zoo.script("m/run.sh")
    names = ("w", "x", "y", "z")
    zoo.models([zoo.model(n, script="scripts/m/run.sh", dockerfile="docker/broken") for n in names])
    with unique_base.watch() as engine:
        result = run(pytester, *ONE_ARCH, "-n", "2", "--junitxml=j.xml", "--madengine-perf-csv", "p.csv")
        result.assert_outcomes(errors=4)
        assert engine.steps(failed=True) == 1  # one attempt on the engine, for 4 items on 2 workers
        assert engine.steps(failed=False) == 0
        assert engine.builds() == Counter()
    assert "Traceback" not in result.stdout.str()
    cases = ET.parse(pytester.path / "j.xml").getroot().iter("testcase")
    errors = {case.get("name"): case.find("error") for case in cases}
    assert set(errors) == {f"{n}[gfx942]" for n in names}
    for name, error in errors.items():
        assert error is not None, name
        text = f"{error.get('message')}\n{error.text}"
        assert "image build failed for" in text and "broken.ubuntu.amd.Dockerfile (gfx942)" in text, name
        assert f"fail-{unique_base.marker}-42" in text, name
    rows = read_perf(pytester.path / "p.csv")
    assert sorted((r["model"], r["status"], r["reason"]) for r in rows) == [
        (n, "FAILURE", "image build failed") for n in names
    ]


@pytest.mark.parametrize("source", ["host-named-env", "credential-json"])
def test_push_finds_credentials_named_after_the_registry_host(
    pytester: pytest.Pytester, zoo: Zoo, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    for name in list(os.environ):
        if name.startswith(("MAD_DOCKERHUB_", "MAD_REGISTRY_")):
            monkeypatch.delenv(name)
    if source == "host-named-env":  # e.g. MAD_REGISTRY_127_0_0_1_5000_USER
        prefix = f"MAD_REGISTRY_127_0_0_1_{registry.port}"
        monkeypatch.setenv(f"{prefix}_USER", registry.user)
        monkeypatch.setenv(f"{prefix}_PASSWORD", registry.password)
    else:
        entry = {"username": registry.user, "password": registry.password}
        (pytester.path / "credential.json").write_text(json.dumps({registry.host: entry}))
    # One tiny image of this test's own; a namespace of its own in the session's registry.
    zoo.dockerfile("tiny", body=f"FROM {BASE_IMAGE}\nRUN echo tiny > /which\n# {pytester.path}\n")
    zoo.script("m/run.sh", '#!/bin/bash\necho "performance: 1 $(cat /which)"\n')
    zoo.models([zoo.model("m", script="scripts/m/run.sh", dockerfile="docker/tiny")])
    namespace = f"creds-{uuid.uuid4().hex[:12]}"
    result = run(
        pytester,
        *ONE_ARCH,
        "-rA",
        "--madengine-registry",
        f"{registry.host}/{namespace}",
        *EVERY_OUTPUT,
    )
    result.assert_outcomes(passed=1)
    reference = json.loads((pytester.path / "m.json").read_text())["built_models"]["m[gfx942]"]["registry_image"]
    repository, _, tag = reference.rpartition(":")
    assert repository == f"{registry.host}/{namespace}/tiny.ubuntu.amd"
    # The registry itself holds the pushed tag.
    listing = requests.get(
        f"http://{registry.host}/v2/{namespace}/tiny.ubuntu.amd/tags/list",
        auth=(registry.user, registry.password),
        timeout=30,
    )
    assert listing.status_code == 200 and listing.json()["tags"] == [tag]
    texts = [result.stdout.str(), result.stderr.str()]
    texts += [
        p.read_text(errors="replace")
        for p in pytester.path.rglob("*")
        if p.is_file() and p.suffix in (".csv", ".xml", ".log", ".json") and p.name != "credential.json"
    ]
    assert len(texts) >= 6  # stdout, stderr, perf.csv, JUnit, build and run logs, manifest
    assert all(registry.password not in text for text in texts)


LITTER_TEST = """
import io, json, uuid
from pathlib import Path

BUSYBOX = "pytest-madengine/busybox:latest"


def build(client, labels, tag=None):
    text = f"FROM {BUSYBOX}\\nLABEL salt={uuid.uuid4().hex}\\n"
    image, _ = client.images.build(fileobj=io.BytesIO(text.encode()), labels=labels, tag=tag, pull=False, rm=True)
    return image.id


def test_make_litter(tmp_path, tmp_path_factory, docker_client):
    basetemp = str(tmp_path_factory.getbasetemp())
    recipe = {"pytest-madengine.dockerfile": str(tmp_path / "docker" / "m.ubuntu.amd.Dockerfile")}
    tag = f"madengine/litter-{uuid.uuid4().hex[:12]}:gfx942"
    dangling = build(docker_client, recipe, tag)  # then a rebuild takes its tag
    built = build(docker_client, recipe, tag)
    base = build(docker_client, {"pytest-madengine-tests.basetemp": basetemp})
    step = docker_client.containers.create(built, command=["true"])
    kept = step.commit(repository="pytest-madengine-kept", tag=uuid.uuid4().hex[:12]).id
    step.remove()
    keeper = docker_client.containers.run(
        kept, ["sleep", "600"], detach=True, labels={"pytest-madengine.kept": "litter"}
    )
    ids = {"dangling": dangling, "built": built, "base": base, "kept": kept, "keeper": keeper.id}
    Path(__file__).with_name("litter.json").write_text(json.dumps(ids))
    assert not docker_client.images.get(dangling).tags
"""


def test_the_suite_removes_the_images_it_made_and_only_those(
    pytester: pytest.Pytester, docker_client: docker.DockerClient
) -> None:
    """tests/conftest.py's image cleanup, run by a session of its own: it removes this session's images,
    tagged or dangling, kept containers' images (and those kept containers), and test base images;
    an image another session built stays."""
    tests = Path(__file__).parent
    for name in ("conftest.py", "zoo.py", "run_probe.py"):
        shutil.copy(tests / name, pytester.path / name)
    pytester.makepyfile(test_litter=LITTER_TEST)
    basetemp = pytester.path / "inner"
    # Another session's basetemp may share ours as a prefix (pytest-1 and pytest-12): its image stays.
    other, _ = docker_client.images.build(
        fileobj=io.BytesIO(f"FROM {BASE_IMAGE}\nLABEL salt={uuid.uuid4().hex}\n".encode()),
        labels={"pytest-madengine.dockerfile": f"{basetemp}2/test_x0/docker/m.ubuntu.amd.Dockerfile"},
        pull=False,
        rm=True,
    )
    ids: dict[str, str] = {}
    try:
        result = pytester.runpytest_subprocess(
            f"--basetemp={basetemp}", "-p", "no:cacheprovider", "-p", "no:xdist", timeout=120
        )
        result.assert_outcomes(passed=1)
        ids = json.loads((pytester.path / "litter.json").read_text())
        present = {i["Id"] for i in docker_client.api.images(all=True)}
        assert [what for what in ("dangling", "built", "base", "kept") if ids[what] in present] == []
        assert docker_client.api.containers(all=True, filters={"id": ids["keeper"]}) == []
        try:
            docker_client.images.get(str(other.id))
        except docker.errors.ImageNotFound:
            pytest.fail("the cleanup removed an image of another session (its basetemp only starts like ours)")
    finally:
        if "keeper" in ids:
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.containers.get(ids["keeper"]).remove(force=True)
        for image in (ids.get("kept"), ids.get("built"), ids.get("dangling"), ids.get("base"), other.id):
            if image:
                with contextlib.suppress(docker.errors.ImageNotFound):
                    docker_client.images.remove(image, force=True)

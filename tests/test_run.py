"""End to end on the real Docker engine: build, run, judge, report, clean up."""

from __future__ import annotations

import json
import os
import threading
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import docker
import pytest
from docker.types import Mount
from zoo import (
    BASE_IMAGE,
    EngineEvents,
    EngineRelay,
    Zoo,
    forget_run_id,
    labelled_containers,
    read_perf,
    run_id_of,
    wait_until,
)

from pytest_madengine.engine import local
from pytest_madengine.engine.executor import Deadline, PreparedRun, Workspace
from pytest_madengine.engine.labels import RUN_LABEL
from pytest_madengine.engine.workspace import SCRIPTS_MOUNT
from pytest_madengine.gpus.lease import Lease
from pytest_madengine.zoo.models import load_models

ARCH = ("--madengine-arch", "gfx942", "--madengine-gpus", "none")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        *ARCH, "--madengine-perf-csv", "perf.csv", "-p", "no:cacheprovider", *args, timeout=300
    )


def test_passing_model_reports_performance(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script(
        "m/run.sh",
        '#!/bin/bash\necho "name=$MAD_MODEL_NAME arch=$MAD_SYSTEM_GPU_ARCHITECTURE vendor=$MAD_GPU_VENDOR'
        ' ngpus=$MAD_RUNTIME_NGPUS csv=${MAD_OUTPUT_CSV:-unset} args=$#:$1:$2"\n'
        "cat /etc/madengine-build\necho 'performance: 1.5e+3 samples_per_second'\n",
    )
    zoo.models([zoo.model("m", args="--label 'a b'", tags=["t1", "t2"], training_precision="fp16")])
    result = run(pytester, "-v")
    result.assert_outcomes(passed=1)
    (row,) = read_perf(pytester.path / "perf.csv")
    assert row["model"] == "m"
    assert (row["performance"], row["metric"], row["status"], row["reason"]) == (
        "1.5e+3",
        "samples_per_second",
        "SUCCESS",
        "",
    )
    assert row["gpu_architecture"] == "gfx942"
    assert row["docker_image"].startswith("madengine/dummy.ubuntu.amd:gfx942-")
    assert row["docker_file"] == "docker/dummy.ubuntu.amd.Dockerfile"
    assert row["base_docker"] == "pytest-madengine/busybox:latest"
    assert (row["tags"], row["training_precision"], row["args"]) == ("t1,t2", "fp16", "--label 'a b'")
    assert float(row["test_duration"]) > 0
    log = (pytester.path / "madengine_logs" / "m_dummy.ubuntu.amd.gfx942.run.log").read_text()
    assert "name=m arch=gfx942 vendor=AMD ngpus=0 csv=unset args=2:--label:a b" in log
    assert "built for gfx942" in log
    assert labelled_containers(docker_client, run_id_of(pytester.path)) == []


def test_failing_model_shows_exit_code_image_and_log_tail(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("bad/run.sh", '#!/bin/bash\nfor i in $(seq 1 80); do echo "line $i"; done\nexit 3\n')
    zoo.models([zoo.model("bad")])
    result = run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*model bad on gfx942 failed: exit code 3",
            "image: madengine/dummy.ubuntu.amd:gfx942-*",
            "--- last 50 lines of the container log ---",
            "line 31",
        ]
    )
    failure = out[out.index("--- last 50 lines") :]
    assert "line 80" in failure
    assert "line 30\n" not in failure.split("Captured stdout")[0]
    assert "Traceback" not in out
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["reason"], row["performance"]) == ("FAILURE", "exit code 3", "")
    assert labelled_containers(docker_client, run_id_of(pytester.path)) == []


def test_exit_zero_without_performance_line_fails(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("quiet/run.sh", "#!/bin/bash\necho done\n")
    zoo.models([zoo.model("quiet")])
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*failed: exit code 0 but no performance line*"])
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["reason"]) == ("FAILURE", "no performance line")


def test_multiple_results_rows(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script(
        "multi/run.sh",
        '#!/bin/bash\nprintf "model,performance,metric,temperature\\n1,10,fps,40\\n2,20.5,fps,41\\n" > "$MAD_OUTPUT_CSV"\n',
    )
    zoo.script("broken/run.sh", '#!/bin/bash\nprintf "model,perf\\n1,2\\n" > "$MAD_OUTPUT_CSV"\n')
    zoo.models(
        [
            zoo.model("multi", multiple_results="perf_multi.csv"),
            zoo.model("broken", multiple_results="perf_broken.csv"),
        ]
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*perf_broken.csv is missing the performance column*"])
    rows = read_perf(pytester.path / "perf.csv")
    assert [(r["model"], r["performance"], r["status"]) for r in rows] == [
        ("multi_1", "10", "SUCCESS"),
        ("multi_2", "20.5", "SUCCESS"),
        ("broken", "", "FAILURE"),
    ]
    assert rows[2]["reason"] == "bad multiple_results file"
    assert not (zoo.root / "scripts" / "multi" / "perf_multi.csv").exists()


def test_timeout_kills_the_container(pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient) -> None:
    zoo.script("slow/run.sh", "#!/bin/bash\necho started\nsleep 60\necho 'performance: 1 x'\n")
    zoo.models([zoo.model("slow", timeout=1)])
    with EngineEvents(docker_client) as events:
        result = run(pytester)
        run_id = run_id_of(pytester.path)
        wait_until(lambda: events.of_run(run_id, "destroy"), 60, "the engine reports the container removed")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*failed: timed out after 1 s (limit from models.json)*", "started"])
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["reason"]) == ("FAILURE", "timeout")
    # The engine saw the container killed (SIGKILL: 137), not ending its 60 s sleep by itself.
    assert [e["Actor"]["Attributes"]["exitCode"] for e in events.of_run(run_id, "die")] == ["137"]
    result = run(pytester, "--madengine-timeout", "2")
    result.stdout.fnmatch_lines(["*timed out after 2 s (limit from --madengine-timeout)*"])


def test_rows_from_earlier_sessions_survive(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    run(pytester).assert_outcomes(passed=1)
    run(pytester).assert_outcomes(passed=1)
    assert [r["model"] for r in read_perf(pytester.path / "perf.csv")] == ["m", "m"]


def test_a_foreign_perf_csv_is_refused_before_anything_runs(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    original = "model,performance\nold,1\n"
    (pytester.path / "perf.csv").write_text(original)
    result = run(pytester)
    result.stderr.fnmatch_lines(["*perf.csv exists with a different header*left untouched*--madengine-perf-csv*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (pytester.path / "perf.csv").read_text() == original


def test_junit_properties_and_system_out(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("good/run.sh", "#!/bin/bash\necho 'hello junit'\necho 'performance: 7 fps'\n")
    zoo.script("bad/run.sh", "#!/bin/bash\nexit 4\n")
    zoo.models([zoo.model("good"), zoo.model("bad")])
    run(pytester, "--junitxml=junit.xml", "-o", "junit_logging=system-out")
    tree = ET.parse(pytester.path / "junit.xml")
    cases = {case.get("name"): case for case in tree.iter("testcase")}
    good = cases["good[gfx942]"]
    props = {p.get("name"): p.get("value") for p in good.iter("property")}
    assert props["performance"] == "7"
    assert props["metric"] == "fps"
    assert props["status"] == "SUCCESS"
    assert props["gpu_architecture"] == "gfx942"
    assert (props["docker_image"] or "").startswith("madengine/dummy.ubuntu.amd:gfx942-")
    assert "reason" not in props
    assert "hello junit" in (good.findtext("system-out") or "")
    bad = {p.get("name"): p.get("value") for p in cases["bad[gfx942]"].iter("property")}
    assert (bad["status"], bad["reason"]) == ("FAILURE", "exit code 4")
    assert cases["bad[gfx942]"].get("classname") == "models.json"


def test_xdist_builds_once_and_the_controller_writes_every_row(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    names = [f"m{i}" for i in range(6)]
    for name in names:
        zoo.script(f"{name}/run.sh")
    zoo.models([zoo.model(n) for n in names])
    (zoo.root / "docker" / "dummy.ubuntu.amd.Dockerfile").write_text(
        (zoo.root / "docker" / "dummy.ubuntu.amd.Dockerfile").read_text() + f"# {pytester.path}\n"
    )
    result = run(pytester, "-n", "2", "--junitxml=junit.xml")
    result.assert_outcomes(passed=6)
    rows = read_perf(pytester.path / "perf.csv")
    assert sorted(r["model"] for r in rows) == names
    assert len({r["docker_image"] for r in rows}) == 1
    assert len({r["build_duration"] for r in rows}) == 1 and float(rows[0]["build_duration"]) > 0
    props = [p.get("name") for p in ET.parse(pytester.path / "junit.xml").iter("property")]
    assert props.count("performance") == 6
    assert labelled_containers(docker_client, run_id_of(pytester.path)) == []


def test_last_failed_and_exitfirst(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("a/run.sh", "#!/bin/bash\nexit 1\n")
    zoo.script("b/run.sh")
    zoo.models([zoo.model("a"), zoo.model("b")])
    pytester.runpytest_subprocess(*ARCH, "--madengine-perf-csv", "perf.csv", "-x").assert_outcomes(failed=1)
    result = pytester.runpytest_subprocess(*ARCH, "--madengine-perf-csv", "perf.csv", "--lf", "-v")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*run-last-failure: rerun previous 1 failure*", "*a[[]gfx942[]] FAILED*"])
    assert "b[gfx942]" not in result.stdout.str()


def test_scripts_see_shared_folders_and_write_nothing_into_the_zoo(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("common/lib.sh", "value=from_common\n")
    zoo.script(
        "m/run.sh",
        "#!/bin/bash\n. ../scripts/common/lib.sh\ncat sibling.txt\necho junk > out.txt\n"
        'echo junk > ../scripts/common/leak.txt\necho "performance: 1 $value"\n',
    )
    (zoo.root / "scripts" / "m" / "sibling.txt").write_text("sibling-data\n")
    zoo.models([zoo.model("m")])
    before = sorted(p.relative_to(zoo.root) for p in (zoo.root / "scripts").rglob("*"))
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["sibling-data"])
    assert read_perf(pytester.path / "perf.csv")[0]["metric"] == "from_common"
    assert sorted(p.relative_to(zoo.root) for p in (zoo.root / "scripts").rglob("*")) == before


# How /myworkspace/scripts reached the container (a read-only mount, or a copy), what it can write, what it reads.
WORKSPACE_PROBE = """#!/bin/bash
. ../scripts/common/lib.sh
entry=$(grep ' /myworkspace/scripts ' /proc/mounts)
if [ -n "$entry" ]; then echo "scripts: mounted $(echo "$entry" | cut -d' ' -f4 | cut -d, -f1)"; else echo "scripts: copied"; fi
if echo leak > ../scripts/common/leak.txt 2>/dev/null; then echo "scripts: writable"; else echo "scripts: read-only"; fi
echo own > own.txt && echo "run directory: writable, $(cat own.txt), $(cat sibling.txt)"
echo "sibling zoo: $(cat ../scripts/other/data.txt)"
echo "performance: 1 $value"
"""


def workspace_zoo(zoo: Zoo) -> list[tuple[Path, float]]:
    """A model reading shared and sibling folders and trying to write into them; the tree's state before."""
    zoo.script("common/lib.sh", "value=from_common\n")
    zoo.script("other/data.txt", "other-zoo\n")
    zoo.script("m/run.sh", WORKSPACE_PROBE)
    (zoo.root / "scripts" / "m" / "sibling.txt").write_text("sibling-data\n")
    zoo.models([zoo.model("m")])
    return tree_state(zoo)


def tree_state(zoo: Zoo) -> list[tuple[Path, float]]:
    return sorted((p.relative_to(zoo.root), p.lstat().st_mtime) for p in (zoo.root / "scripts").rglob("*"))


def test_a_local_engine_gets_the_shared_scripts_mounted_read_only(pytester: pytest.Pytester, zoo: Zoo) -> None:
    before = workspace_zoo(zoo)
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "scripts: mounted ro",
            "scripts: read-only",
            "run directory: writable, own, sibling-data",
            "sibling zoo: other-zoo",
        ]
    )
    assert read_perf(pytester.path / "perf.csv")[0]["metric"] == "from_common"
    assert tree_state(zoo) == before


RUN_DIR_PROBE = """#!/bin/bash
echo "$MAD_MODEL_NAME files: $(stat -c '%u:%a:%n' run.sh sibling.txt linked/data.txt | tr '\\n' ' ')"
echo "performance: 1 x"
"""


def test_a_root_container_copies_its_run_directory_itself(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    """A root container copies its run directory from the read-only mount (no put_archive: the engine
    reports no extract-to-dir for it). Another user, an image entrypoint (it runs before the copy) and a
    link to nothing in the run directory (the copy would stop at it) get the archive. The files match."""
    zoo.dockerfile("nobody", body="FROM pytest-madengine/busybox:latest\nUSER 65534\n")
    zoo.dockerfile("entry", body='FROM pytest-madengine/busybox:latest\nENTRYPOINT ["env"]\n')
    models = {"root": "docker/dummy", "nobody": "docker/nobody", "entry": "docker/entry", "dangling": "docker/dummy"}
    zoo.script("data/data.txt", "d\n")
    (zoo.root / "scripts" / "data" / "data.txt").chmod(0o644)
    for name in models:
        zoo.script(f"{name}/run.sh", RUN_DIR_PROBE)
        (zoo.root / "scripts" / name / "sibling.txt").write_text("s\n")
        (zoo.root / "scripts" / name / "sibling.txt").chmod(0o640)
        (zoo.root / "scripts" / name / "linked").symlink_to("../data", target_is_directory=True)
    (zoo.root / "scripts" / "dangling" / "gone").symlink_to("no-such-file")
    zoo.models([zoo.model(name, dockerfile=dockerfile) for name, dockerfile in models.items()])
    with EngineEvents(docker_client) as events:
        # strict: the image's USER stands (madengine's isolation runs every container as root)
        result = run(pytester, "-rA", "--madengine-isolation", "strict")
        run_id = run_id_of(pytester.path)
        wait_until(lambda: len(events.of_run(run_id, "destroy")) == 4, 60, "the engine reports all containers gone")
    result.assert_outcomes(passed=4)
    extracted = {e["Actor"]["Attributes"]["pytest-madengine.test"] for e in events.of_run(run_id, "extract-to-dir")}
    assert extracted == {f"models.json::{name}[gfx942]" for name in ("nobody", "entry", "dangling")}
    files = {line.split(" files: ")[0]: line.split(" files: ")[1] for line in result.outlines if " files: " in line}
    me = os.getuid()  # the owner the archive's headers carry, and the copy keeps
    assert set(files.values()) == {f"{me}:755:run.sh {me}:640:sibling.txt {me}:644:linked/data.txt "}
    assert len(files) == 4


def test_pre_scripts_that_write_under_the_shared_scripts_get_the_copy(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """MAD's pre scripts (rocEnvTool) write their output beside themselves under ../scripts: with pre or
    post scripts the shared tree is copied in, writable, as before; the user's tree is still untouched."""
    workspace_zoo(zoo)
    zoo.script("common/pre.sh", '#!/bin/bash\necho pre-output > ../scripts/common/pre.out && echo "pre wrote"\n')
    before = tree_state(zoo)
    context = json.dumps({"pre_scripts": [{"path": "scripts/common/pre.sh"}]})
    result = run(pytester, "-rA", "--madengine-context", context)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pre wrote", "scripts: copied", "scripts: writable"])
    assert tree_state(zoo) == before


def test_a_remote_engine_gets_the_shared_scripts_copied_in(
    pytester: pytest.Pytester, zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DOCKER_HOST=tcp://: the engine may be another machine, so nothing is mounted from ours (a relay
    to the local engine stands in for it)."""
    before = workspace_zoo(zoo)
    relay = EngineRelay.tcp()
    try:
        monkeypatch.setenv("DOCKER_HOST", relay.docker_host)
        result = run(pytester, "-rA")
    finally:
        relay.close()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["scripts: copied", "scripts: writable", "run directory: writable, own, sibling-data", "sibling zoo: other-zoo"]
    )
    assert read_perf(pytester.path / "perf.csv")[0]["metric"] == "from_common"
    assert tree_state(zoo) == before


def test_a_symlink_out_of_the_zoo_gets_the_shared_scripts_copied_in(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """A mount would show the link, dangling in the container; madengine's `cp -vLR` copies its target."""
    (pytester.path / "datasets").mkdir()
    (pytester.path / "datasets" / "table.csv").write_text("from-outside\n")
    (zoo.root / "scripts" / "common").mkdir()
    (zoo.root / "scripts" / "common" / "data").symlink_to("../../datasets", target_is_directory=True)
    zoo.script(
        "m/run.sh",
        '#!/bin/bash\necho "scripts mounts: $(grep -c myworkspace/scripts /proc/mounts)"\n'
        "cat ../scripts/common/data/table.csv\n"
        "echo 'performance: 1 x'\n",
    )
    zoo.models([zoo.model("m")])
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["scripts mounts: 0", "from-outside"])


def test_a_context_mount_inside_the_shared_scripts_keeps_the_copy(pytester: pytest.Pytester, zoo: Zoo) -> None:
    """`docker_mounts` onto /myworkspace/scripts/...: the user's mount is seen as before; beside it, ours."""
    for name in ("inner", "beside"):
        (pytester.path / name).mkdir()
        (pytester.path / name / "f.txt").write_text(f"{name}-data\n")
    zoo.script("common/lib.sh", "value=from_common\n")
    zoo.models([zoo.model("m")])
    for mounts, how in (
        ({"/myworkspace/scripts/inner": "inner", "/myworkspace/beside": "beside"}, "0"),
        ({"/myworkspace/inner": "inner", "/myworkspace/beside": "beside"}, "1"),
    ):
        context = {"docker_mounts": {inside: str(pytester.path / host) for inside, host in mounts.items()}}
        cat = "../scripts/inner/f.txt" if "/myworkspace/scripts/inner" in mounts else "../inner/f.txt"
        zoo.script(
            "m/run.sh",
            f"#!/bin/bash\n. ../scripts/common/lib.sh\ncat {cat} /myworkspace/beside/f.txt\n"
            'echo "scripts mounts: $(grep -c " /myworkspace/scripts " /proc/mounts)"\necho "performance: 1 $value"\n',
        )
        result = run(pytester, "-rA", "--madengine-context", json.dumps(context))
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["inner-data", "beside-data", f"scripts mounts: {how}"])


def test_an_engine_that_cannot_see_the_zoo_gets_the_copy(
    zoo: Zoo, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest in a container talking to the host's engine: a unix socket, yet our paths are not the
    engine's. The engine refuses the bind source at create; the workspace is copied in instead."""
    zoo.script("common/lib.sh", "value=from_common\n")
    zoo.script("m/run.sh")
    (spec,) = load_models(zoo.models([zoo.model("m")])).specs
    missing = Mount(SCRIPTS_MOUNT, f"/no-such-zoo-{uuid.uuid4().hex}/scripts", type="bind", read_only=True)
    monkeypatch.setattr(local, "scripts_mount", lambda root: missing)
    command = ("sh", "-c", "grep -c ' /myworkspace/scripts ' /proc/mounts; . ../scripts/common/lib.sh; echo $value")
    prepared = PreparedRun(
        image=BASE_IMAGE,
        command=command,
        environment={},
        gpus=Lease(()),
        labels={RUN_LABEL: "fallback-test"},
        workspace=Workspace(spec.script_path.parent, spec.root / "scripts"),
    )
    executor = local.LocalDocker(lambda: docker_client, None)
    started = executor.start(prepared)
    try:
        outcome = executor.wait(started, Deadline(60))
    finally:
        executor.finish(started, keep=False)
    assert (outcome.exit_code, outcome.log.split()) == (0, ["0", "from_common"])


def test_containers_carry_the_run_label_while_running(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("m/run.sh", "#!/bin/bash\nsleep 4\necho 'performance: 1 x'\n")
    zoo.models([zoo.model("m")])
    seen: list[dict[str, str]] = []
    outcome: list[pytest.RunResult] = []
    forget_run_id(pytester.path)
    thread = threading.Thread(target=lambda: outcome.append(run(pytester)))
    thread.start()
    try:
        run_id = run_id_of(pytester.path)

        def labelled_one_running() -> bool:
            seen[:] = [c["Labels"] for c in labelled_containers(docker_client, run_id) if c["State"] == "running"]
            return bool(seen)

        wait_until(labelled_one_running, 60, "a container of this run running")
    finally:
        thread.join(timeout=300)  # run() has its own 300 s limit
    assert not thread.is_alive(), "the session did not end"
    outcome[0].assert_outcomes(passed=1)
    (labels,) = seen
    assert labels["pytest-madengine.test"] == "models.json::m[gfx942]"
    assert labels["pytest-madengine.run"] == run_id
    assert labelled_containers(docker_client, run_id) == []


def test_build_args_reach_the_build(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.dockerfile(
        "args",
        body='ARG BASE_DOCKER=nothing:here\nFROM $BASE_DOCKER\nARG EXTRA=none\nRUN echo "extra=$EXTRA" > /extra\n',
    )
    zoo.script("m/run.sh", "#!/bin/bash\ncat /extra\necho 'performance: 1 x'\n")
    zoo.models([zoo.model("m", dockerfile="docker/args")])
    result = run(
        pytester,
        "-rA",
        "--madengine-build-arg",
        "BASE_DOCKER=pytest-madengine/busybox:latest",
        "--madengine-build-arg",
        "EXTRA=yes",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["extra=yes"])
    assert read_perf(pytester.path / "perf.csv")[0]["base_docker"] == "pytest-madengine/busybox:latest"


def test_models_tree_is_untouched_by_a_run(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    before = {p: p.stat().st_mtime for p in Path(zoo.root / "scripts").rglob("*")}
    run(pytester).assert_outcomes(passed=1)
    assert {p: p.stat().st_mtime for p in Path(zoo.root / "scripts").rglob("*")} == before


# A python3 for the busybox base (which has none): it shows how it was called, and reports.
FAKE_PYTHON3 = """FROM pytest-madengine/busybox:latest
RUN echo '#!/bin/sh' > /usr/bin/python3 \\
 && echo 'echo "fake-python3 argc=$# argv=$* cwd=$(pwd)"' >> /usr/bin/python3 \\
 && echo 'echo "performance: 3 runs"' >> /usr/bin/python3 \\
 && chmod +x /usr/bin/python3
"""


def test_a_py_script_runs_with_python3(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.dockerfile("py", body=FAKE_PYTHON3)
    # Under bash this would be a syntax error: only python3 makes the model pass.
    zoo.script("pym/main.py", 'print("performance: 1 python")\n')
    zoo.models([zoo.model("pym", script="scripts/pym/main.py", dockerfile="docker/py", args="--flag 'a b'")])
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["fake-python3 argc=3 argv=main.py --flag a b cwd=/myworkspace/run_directory"])
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["performance"], row["metric"]) == ("SUCCESS", "3", "runs")


def test_a_scripts_directory_runs_its_run_sh(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script(
        "dirm/run.sh",
        '#!/bin/bash\necho "run.sh args=$# $1 in $(pwd) with $(cat data.txt)"\necho "performance: 9 dirs"\n',
    )
    zoo.script("dirm/main.sh", "#!/bin/bash\necho 'main.sh is not the entry point'\nexit 5\n")
    (zoo.root / "scripts" / "dirm" / "data.txt").write_text("its-own-data\n")
    zoo.models([zoo.model("dirm", script="scripts/dirm", args="--x")])
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["run.sh args=1 --x in /myworkspace/run_directory with its-own-data"])
    assert "main.sh is not the entry point" not in result.stdout.str()
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["performance"], row["metric"]) == ("SUCCESS", "9", "dirs")


@pytest.mark.parametrize("build_number", ["4711", None])
def test_jenkins_build_number_is_the_hosts_build_number(
    pytester: pytest.Pytester, zoo: Zoo, monkeypatch: pytest.MonkeyPatch, build_number: str | None
) -> None:
    zoo.script("m/run.sh", '#!/bin/bash\necho "jenkins=[${JENKINS_BUILD_NUMBER-unset}]"\necho "performance: 1 x"\n')
    zoo.models([zoo.model("m")])
    if build_number is None:
        monkeypatch.delenv("BUILD_NUMBER", raising=False)
    else:
        monkeypatch.setenv("BUILD_NUMBER", build_number)
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"jenkins=[{build_number or '0'}]"])

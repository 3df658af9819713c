"""Items as SLURM jobs on a two-node cluster started for the session (tools/slurm-cluster.sh): SLURM
places them; the containers' own clocks and GPU ids, the engine's events and SLURM's queue judge."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import docker
import docker.errors
import pytest
from zoo import (
    EngineEvents,
    Zoo,
    kill_session,
    labelled_containers,
    read_perf,
    remove_run,
    run_id_of,
    start_session,
    wait_until,
)

SLURM = (
    "--madengine-arch",
    "gfx942",
    "--madengine-slurm",
    "-p",
    "no:cacheprovider",
    "--madengine-perf-csv",
    "perf.csv",
)

# Each container stamps its GPU ids and its own clock at start and end.
STAMP = """#!/bin/bash
echo "slot gpus=$MAD_HOST_GPU_IDS n=$MAD_RUNTIME_NGPUS start=$(cut -d' ' -f1 /proc/uptime)"
sleep {sleep}
echo "slot end=$(cut -d' ' -f1 /proc/uptime)"
echo "performance: 1 slots"
"""


@pytest.fixture
def cluster(slurm_cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in slurm_cluster.items():
        monkeypatch.setenv(name, value)
    return slurm_cluster


def queued(run_id: str) -> list[str]:
    """SLURM's own list of the run's jobs still pending or running."""
    done = subprocess.run(["squeue", "-h", "-n", f"pmad-{run_id}", "-o", "%i"], capture_output=True, text=True)
    return done.stdout.split()


def queued_tests(run_id: str) -> list[str]:
    """The models of the run's jobs SLURM lists, from each job's comment (`<worker> <node id>`)."""
    done = subprocess.run(["squeue", "-h", "-n", f"pmad-{run_id}", "-o", "%k"], capture_output=True, text=True)
    return sorted(re.sub(r".*::|\[.*", "", line) for line in done.stdout.splitlines() if line.strip())


def slots(log: str) -> tuple[set[int], float, float]:
    start_line = next(line for line in log.splitlines() if line.startswith("slot gpus="))
    end_line = next(line for line in log.splitlines() if line.startswith("slot end="))
    fields = dict(part.split("=", 1) for part in start_line.split()[1:])
    ids = {int(i) for i in fields["gpus"].split(",") if i}
    return ids, float(fields["start"]), float(end_line.split("=", 1)[1])


def test_mixed_models_share_the_cluster_without_overlap(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str]
) -> None:
    sizes = [1, 2, 3, 4, 1, 2, 1, 4, 2, 1, 3, 1, 2, 1, 1, 2, 4, 1, 2, 1]
    zoo.script("m/run.sh", STAMP.format(sleep=1))
    zoo.models([zoo.model(f"m{i:02d}", script="scripts/m/run.sh", n_gpus=n) for i, n in enumerate(sizes)])
    result = pytester.runpytest_subprocess(*SLURM, "-n", "4", "--junitxml=j.xml", timeout=600)
    result.assert_outcomes(passed=20)
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert {r["deployment_type"] for r in rows.values()} == {"slurm"}
    assert {r["machine_name"] for r in rows.values()} <= {"n1", "n2"}
    # Every testcase names its job; the GPU ids it names are the ones its container saw.
    cases = ET.parse(pytester.path / "j.xml").getroot().iter("testcase")
    jobs = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in cases}
    assert all((props.get("slurm_job") or "").isdigit() for props in jobs.values()) and len(jobs) == 20
    seen = {}
    for name in rows:
        log = (pytester.path / "madengine_logs" / f"{name}_dummy.ubuntu.amd.gfx942.run.log").read_text()
        ids, start, end = slots(log)
        assert len(ids) == int(rows[name]["n_gpus"]) == sizes[int(name[1:])]
        assert ",".join(str(i) for i in sorted(ids)) == jobs[f"{name}[gfx942]"]["gpus"]
        seen[name] = (rows[name]["machine_name"], ids, start, end)
    for (a, (node_a, ids_a, start_a, end_a)), (b, (node_b, ids_b, start_b, end_b)) in itertools.combinations(
        seen.items(), 2
    ):
        if node_a == node_b and ids_a & ids_b:
            assert end_a <= start_b or end_b <= start_a, f"{a} and {b} shared GPUs {ids_a & ids_b} on {node_a}"


def test_the_example_zoo_runs_on_the_cluster(pytester: pytest.Pytester, cluster: dict[str, str]) -> None:
    shutil.copytree(Path(__file__).parent.parent / "models", pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_subprocess(*SLURM, "-n", "4", "-rs", "--junitxml=j.xml", timeout=600)
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["*skip_gpu_arch lists gfx942*"])
    rows = read_perf(pytester.path / "perf.csv")
    ran = [r for r in rows if r["status"] == "SUCCESS"]
    assert {r["model"] for r in ran} == {"dummy", "dummy2/model2", "cpu_hash"} | {f"dummy_multi_{i}" for i in (1, 2, 3)}
    assert {r["deployment_type"] for r in ran} == {"slurm"} and {r["machine_name"] for r in ran} <= {"n1", "n2"}
    cases = ET.parse(pytester.path / "j.xml").getroot().iter("testcase")
    jobs = [{p.get("name"): p.get("value") for p in c.iter("property")} for c in cases if c.find("skipped") is None]
    assert len(jobs) == 4 and all(props.get("slurm_job") for props in jobs)


def test_a_runner_removes_containers_of_jobs_slurm_no_longer_lists(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str], docker_client: docker.DockerClient
) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m", n_gpus=1)])
    labels = {"pytest-madengine.slurm-job": "987654321", "pytest-madengine.test-stale": pytester.path.name}
    stale = docker_client.containers.run(
        "pytest-madengine/busybox:latest", ["sleep", "300"], detach=True, labels=labels
    )
    MARKS.mkdir(mode=0o1777, exist_ok=True)
    (MARKS / "987654321.0.1").touch()  # what a runner killed with SIGKILL leaves beside its container
    try:
        result = pytester.runpytest_subprocess(*SLURM, timeout=300)
        result.assert_outcomes(passed=1)
        wait_until(
            lambda: not docker_client.api.containers(all=True, filters={"id": stale.id}), 60, "the stale one gone"
        )
        assert not list(MARKS.glob("987654321.*"))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            stale.remove(force=True)
        for mark in MARKS.glob("987654321.*"):
            mark.unlink()


MARKS = Path("/tmp/pmad-jobs")  # the runners' markers on a node (here every node is this host)


def runner_of(job: str) -> int | None:
    """The pid of job `job`'s runner: the `/bin/bash -s` that slurmstepd started (its own subshells
    share its command line and environment, but not its parent)."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            parent_name = Path(f"/proc/{parent}/comm").read_text().strip()
        except (OSError, IndexError):
            continue
        ours = command[:2] == [b"/bin/bash", b"-s"] and f"SLURM_JOB_ID={job}".encode() in environ
        if ours and parent_name == "slurmstepd":
            return int(proc.name)
    return None


def test_a_runner_killed_with_sigkill_leaves_a_container_the_next_runner_removes(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str], docker_client: docker.DockerClient
) -> None:
    """A runner killed with SIGKILL cannot remove its container, which outlives the job; its marker
    stays on the node, and the next runner there, finding SLURM no longer lists that job, removes it."""
    zoo.script("slow/run.sh", STAMP.format(sleep=300))
    zoo.script("quick/run.sh", STAMP.format(sleep=0))
    zoo.models([zoo.model("slow", n_gpus=1), zoo.model("quick", n_gpus=1)])
    session = start_session(pytester.path, *SLURM, "-k", "slow")
    run_id, job = "", ""
    try:
        run_id = run_id_of(pytester.path)
        current = run_id
        wait_until(lambda: labelled_containers(docker_client, current), 120, "the slow model's container")
        (job,) = queued(run_id)
        runner = runner_of(job)
        assert runner is not None
        os.kill(runner, signal.SIGKILL)
        session.communicate(timeout=120)
        wait_until(lambda: queued(current) == [], 60, "the job gone from SLURM's queue")
        left = labelled_containers(docker_client, run_id)
        assert len(left) == 1 and list(MARKS.glob(f"{job}.*"))  # outlived the job, and its marker says so
        result = pytester.runpytest_subprocess(*SLURM, "-k", "quick", timeout=300)
        result.assert_outcomes(passed=1)
        wait_until(lambda: labelled_containers(docker_client, current) == [], 60, "the killed job's container gone")
        assert not list(MARKS.glob(f"{job}.*"))
    finally:
        kill_session(session)
        if run_id:
            subprocess.run(["scancel", "-n", f"pmad-{run_id}"], capture_output=True, check=False)
            remove_run(docker_client, run_id)
        for mark in MARKS.glob(f"{job}.*") if job else ():
            mark.unlink()


def test_a_container_the_node_cannot_create_fails_the_model_with_the_nodes_word(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str], docker_client: docker.DockerClient
) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m", n_gpus=1, additional_docker_run_options="--cpuset-cpus 97")])
    result = pytester.runpytest_subprocess(*SLURM, timeout=300)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*cannot create a container of madengine/dummy*on node n[12]: docker:*Requested CPUs are not available*"]
    )
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["reason"]) == ("FAILURE", "executor lost")
    assert labelled_containers(docker_client, run_id_of(pytester.path)) == []


def test_a_model_past_its_limit_times_out_and_leaves_nothing(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str], docker_client: docker.DockerClient
) -> None:
    zoo.script("m/run.sh", STAMP.format(sleep=120))
    zoo.models([zoo.model("m", n_gpus=1, timeout=3)])
    with EngineEvents(docker_client) as events:
        result = pytester.runpytest_subprocess(*SLURM, timeout=300)
        run_id = run_id_of(pytester.path)
        wait_until(lambda: len(events.of_run(run_id, "destroy")) == 1, 60, "the engine reports the container gone")
    result.assert_outcomes(failed=1)
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["reason"]) == ("FAILURE", "timeout")
    started = events.times(run_id, "start")["models.json::m[gfx942]"]
    died = events.times(run_id, "die")["models.json::m[gfx942]"]
    assert died - started <= 3 + 2  # killed within 2 s of the deadline, by the engine's clock
    assert queued(run_id) == [] and labelled_containers(docker_client, run_id) == []


# Each node's container says what rendezvous it was given; rank 1 of `broken_pair` fails.
RANKS = """#!/bin/bash
echo "rank=$NODE_RANK addr=$MASTER_ADDR port=$MASTER_PORT nnodes=$NNODES world=$WORLD_SIZE nproc=$NPROC_PER_NODE"
echo "runner=$MAD_MULTI_NODE_RUNNER"
if [ "$NODE_RANK" = 1 ] && [ "$MAD_MODEL_NAME" = broken_pair ]; then echo "rank 1 gives up"; exit 3; fi
if [ "$NODE_RANK" = 0 ]; then echo "performance: 7 samples_per_second"; fi
"""


def said(log: str) -> dict[str, str]:
    line = next(line for line in log.splitlines() if line.startswith("rank="))
    return dict(part.split("=", 1) for part in line.split())


def test_a_two_node_card_runs_one_container_per_node_with_one_rendezvous(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str], docker_client: docker.DockerClient
) -> None:
    zoo.script("pair/run.sh", RANKS)
    two = {"launcher": "torchrun", "nnodes": 2}
    zoo.models(
        [
            zoo.model("pair", n_gpus=2, distributed=two),
            zoo.model("broken_pair", script="scripts/pair/run.sh", n_gpus=2, distributed=two),
        ]
    )
    result = pytester.runpytest_subprocess(*SLURM, "-n", "2", "--junitxml=j.xml", timeout=600)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*rank 1 on n* exited with 3*"])
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    ok = rows["pair"]
    assert (ok["status"], ok["performance"], ok["nnodes"], ok["gpus_per_node"], ok["n_gpus"]) == (
        "SUCCESS",
        "7",
        "2",
        "2",
        "4",
    )
    assert sorted(ok["machine_name"].split(",")) == ["n1", "n2"]
    assert (rows["broken_pair"]["status"], rows["broken_pair"]["reason"]) == ("FAILURE", "exit code 3")
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "j.xml").getroot().iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["pair[gfx942]"].iter("property")}
    logs = pytester.path / "madengine_logs"
    (main,) = logs.glob("pair_*.gfx942.run.log")
    rank1 = Path(str(props["log_rank1"]))
    assert rank1.parent == logs and props["slurm_job"]
    first, second = said(main.read_text()), said(rank1.read_text())
    assert (first["rank"], second["rank"]) == ("0", "1")
    assert first["addr"] == second["addr"] != "" and first["port"] == second["port"] != ""
    assert first["nnodes"] == second["nnodes"] == "2" and first["world"] == "4" and first["nproc"] == "2"
    for log, rank in ((main.read_text(), 0), (rank1.read_text(), 1)):
        assert f"--nnodes=2 --nproc_per_node=2 --node_rank={rank} --master_addr={first['addr']}" in log
    assert "performance:" not in rank1.read_text()
    assert queued(run_id_of(pytester.path)) == [] and labelled_containers(docker_client, run_id_of(pytester.path)) == []


# A slurm_multi launcher: it runs on the first node and starts one container per node itself.
LAUNCHER = """#!/bin/bash
echo "head nodes=$SLURM_JOB_NODELIST model=$MODEL_NAME image=$DOCKER_IMAGE_NAME args=$*"
srun -N 2 -n 2 bash -c 'docker run --rm -e TASK="$SLURM_PROCID" -e NODE="$SLURMD_NODENAME" "$DOCKER_IMAGE_NAME" \\
  sh -c "echo container of task \\$TASK on \\$NODE"' || exit 5
srun -N 2 -n 2 bash -c 'echo "task $SLURM_PROCID on $SLURMD_NODENAME"'
echo "performance: 42 tokens_per_second"
"""


def test_a_slurm_multi_card_runs_its_own_launcher_as_a_batch_job(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    zoo.script("multi/run.slurm", LAUNCHER)
    card = zoo.model(
        "disagg",
        script="scripts/multi/run.slurm",
        n_gpus=-1,
        args="-N 2 -n 2",
        distributed={"launcher": "slurm_multi", "nnodes": 2},
        env_vars={"MODEL_NAME": "tiny", "DOCKER_IMAGE_NAME": "<supply-your-image>"},
        slurm={"nodes": 2, "gpus_per_node": 2, "time": "00:05:00"},
    )
    zoo.models([card])
    monkeypatch.setenv("MAD_SECRETS_TOKEN", "s3cret-of-the-test")
    shared = pytester.path / "shared"
    without = pytester.runpytest_subprocess(*SLURM, "-rs", timeout=300)
    without.assert_outcomes(skipped=1)
    without.stdout.fnmatch_lines(["*slurm_multi card needs --madengine-slurm-shared-dir*"])
    result = pytester.runpytest_subprocess(*SLURM, "--madengine-slurm-shared-dir", str(shared), timeout=300)
    result.assert_outcomes(passed=1)
    (row,) = [r for r in read_perf(pytester.path / "perf.csv") if r["status"] != "SKIPPED"]
    assert (row["performance"], row["metric"], row["deployment_type"], row["launcher"]) == (
        "42",
        "tokens_per_second",
        "slurm",
        "slurm_multi",
    )
    assert (row["nnodes"], row["machine_name"]) == ("2", "n1,n2")
    (log,) = (pytester.path / "madengine_logs").glob("disagg_*.run.log")
    text = log.read_text()
    assert f"image={row['docker_image']} args=-N 2 -n 2" in text and "model=tiny" in text
    assert "container of task 0 on n1" in text and "container of task 1 on n2" in text
    assert "task 0 on n1" in text and "task 1 on n2" in text
    assert list(shared.iterdir()) == []  # the job's folder went with the run
    state = Path(cluster["SLURM_CONF"]).parent / "state"  # where slurmctld keeps batch scripts
    leaked = subprocess.run(["grep", "-rl", "s3cret-of-the-test", str(state), str(pytester.path)], capture_output=True)
    assert leaked.stdout == b""


def test_a_slurm_multi_card_past_its_limit_is_cancelled_as_a_timeout(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str]
) -> None:
    zoo.script("multi/run.slurm", "#!/bin/bash\necho started\nsleep 300\n")
    card = zoo.model(
        "stuck",
        script="scripts/multi/run.slurm",
        timeout=3,
        distributed={"launcher": "slurm_multi", "nnodes": 2},
        slurm={"nodes": 2},
    )
    zoo.models([card])
    shared = pytester.path / "shared"
    result = pytester.runpytest_subprocess(*SLURM, "--madengine-slurm-shared-dir", str(shared), timeout=300)
    result.assert_outcomes(failed=1)
    (row,) = read_perf(pytester.path / "perf.csv")
    assert (row["status"], row["reason"]) == ("FAILURE", "timeout")
    wait_until(lambda: queued(run_id_of(pytester.path)) == [], 60, "the cancelled job gone from the queue")
    assert list(shared.iterdir()) == []


def fast_row_written(path: Path) -> bool:
    return path.exists() and any(line.startswith("fast,") for line in path.read_text().splitlines())


def interrupt_mid_run(pytester: pytest.Pytester, docker_client: docker.DockerClient, how: str) -> None:
    """Start a session, wait until `fast` finished and a slow job runs, then Ctrl-C the session or
    SIGKILL one of its workers; afterwards SLURM lists no job of the run and the engine no container."""
    args = (*SLURM, "-n", "2") if how == "kill-worker" else SLURM
    session = start_session(pytester.path, *args)
    run_id = ""
    try:
        run_id = run_id_of(pytester.path)
        current = run_id
        wait_until(lambda: fast_row_written(pytester.path / "perf.csv") and len(queued(current)) >= 1, 120, "a job")
        if how == "kill-worker":  # the controller cancels that worker's job; the other runs on
            # By the jobs' own names: fast's job can still be listed (completing) while its worker
            # tears it down, and a worker killed then would have crashed in fast's teardown.
            wait_until(lambda: queued_tests(current) == ["slow0", "slow1"], 120, "both slow jobs, and only they")
            workers = subprocess.run(["ps", "-o", "pid=", "--ppid", str(session.pid)], capture_output=True, text=True)
            os.kill(int(workers.stdout.split()[0]), signal.SIGKILL)
            wait_until(lambda: len(queued(current)) == 1, 60, "the killed worker's job cancelled")
            wait_until(lambda: len(labelled_containers(docker_client, current)) == 1, 120, "its container removed")
        os.kill(session.pid, signal.SIGINT)
        output, _ = session.communicate(timeout=120)
        wait_until(lambda: queued(current) == [], 60, f"no job of the run left ({how})")
        wait_until(lambda: labelled_containers(docker_client, current) == [], 60, f"no container left ({how})")
        fast = [(r["status"], r["reason"]) for r in read_perf(pytester.path / "perf.csv") if r["model"] == "fast"]
        assert fast == [("SUCCESS", "")], output  # a finished model's row is kept
    finally:
        kill_session(session)
        if run_id:
            subprocess.run(["scancel", "-n", f"pmad-{run_id}"], capture_output=True, check=False)
            remove_run(docker_client, run_id)


def test_ctrl_c_and_a_killed_worker_leave_no_job_and_no_container(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str], docker_client: docker.DockerClient
) -> None:
    zoo.script("fast/run.sh", STAMP.format(sleep=0))
    zoo.script("slow/run.sh", STAMP.format(sleep=300))
    slow = [zoo.model(f"slow{i}", script="scripts/slow/run.sh", n_gpus=1) for i in range(2)]
    zoo.models([zoo.model("fast", n_gpus=1), *slow])
    interrupt_mid_run(pytester, docker_client, "interrupt")
    (pytester.path / "perf.csv").unlink()
    interrupt_mid_run(pytester, docker_client, "kill-worker")


def test_what_no_node_can_hold_is_skipped_and_slurm_multi_needs_slurm(
    pytester: pytest.Pytester, zoo: Zoo, cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    zoo.script("m/run.sh")
    zoo.models(
        [
            zoo.model("eight", script="scripts/m/run.sh", n_gpus=8),
            zoo.model("multi", script="scripts/m/run.sh", distributed={"launcher": "slurm_multi", "nnodes": 2}),
            zoo.model("three", script="scripts/m/run.sh", n_gpus=1, distributed={"nnodes": 3}),
        ]
    )
    result = pytester.runpytest_subprocess(*SLURM, "-rs", timeout=300)
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*needs 8 GPUs per node, the largest node has 4*"])
    result.stdout.fnmatch_lines(["*needs 3 nodes with 1 GPU, the cluster has 2*"])
    monkeypatch.delenv("SLURM_CONF")
    local = pytester.runpytest_subprocess(
        "--madengine-arch",
        "gfx942",
        "--madengine-gpus",
        "0-3",
        "-p",
        "no:cacheprovider",
        "-rs",
        "--madengine-perf-csv",
        "local.csv",
        "-k",
        "multi",
        timeout=300,
    )
    local.assert_outcomes(skipped=1)
    local.stdout.fnmatch_lines(["*needs SLURM (a slurm_multi card)*"])


def test_slurm_without_a_cluster_is_a_usage_error(pytester: pytest.Pytester, zoo: Zoo, tmp_path: Path) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    env_conf = tmp_path / "nowhere.conf"
    env_conf.write_text("ClusterName=none\nSlurmctldHost=localhost\nSlurmctldPort=1\n")
    os.environ["SLURM_CONF"] = str(env_conf)
    try:
        result = pytester.runpytest_subprocess(*SLURM, timeout=120)
    finally:
        del os.environ["SLURM_CONF"]
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--madengine-slurm: *sinfo*"])

"""GPU pool, exclusive leases across processes, and the plugin's GPU behaviour on fake hosts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from zoo import Zoo, kill_session, labelled_containers, read_perf, remove_run, run_id_of, start_session, wait_until

from pytest_madengine.engine.local import docker_options
from pytest_madengine.engine.prepare import HostFacts, RunIdentity, model_environment, prepare_run
from pytest_madengine.gpus.allocator import GpuAllocator, Grant, Scheduling, token_alive
from pytest_madengine.gpus.detect import Detection, Gpu
from pytest_madengine.gpus.lease import Lease
from pytest_madengine.gpus.pool import PoolError, make_pool, parse_gpu_ids
from pytest_madengine.zoo.context import RunContext
from pytest_madengine.zoo.models import ModelSpec

FAKEHOSTS = Path(__file__).parent / "fakehosts"


@pytest.fixture
def on_host(monkeypatch: pytest.MonkeyPatch, hermetic_path: str) -> Callable[[str], None]:
    """Make the sessions a test starts see a fake host: its tools first on the hermetic PATH."""

    def use(host: str) -> None:
        monkeypatch.setenv("PATH", f"{FAKEHOSTS / host / 'bin'}{os.pathsep}{hermetic_path}")

    return use


# --- the pool ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ids"),
    [("0,2-5", (0, 2, 3, 4, 5)), ("3,1,1", (1, 3)), ("none", ()), ("7-7", (7,)), (" 0 , 1 ", (0, 1))],
)
def test_gpu_id_lists(text: str, ids: tuple[int, ...]) -> None:
    assert parse_gpu_ids(text) == ids


@pytest.mark.parametrize("text", ["a", "3-1", "-1", "1-x"])
def test_bad_gpu_id_lists(text: str) -> None:
    with pytest.raises(PoolError):
        parse_gpu_ids(text)


AMD = Detection(
    gpus=tuple(
        Gpu(
            index=i,
            vendor="AMD",
            arch="gfx942",
            product_name="AMD Instinct MI300X",
            render_node=f"/dev/dri/renderD{128 + 8 * i}",
        )
        for i in range(4)
    ),
    warnings=(),
)
NVIDIA = Detection(
    gpus=tuple(Gpu(index=i, vendor="NVIDIA", arch="sm_90", product_name="NVIDIA H100 80GB HBM3") for i in range(2)),
    warnings=(),
)


def test_explicit_ids_must_exist_on_a_host_with_gpus() -> None:
    with pytest.raises(PoolError, match=r"GPU 5 is not on this host \(it has 0,1,2,3\)"):
        make_pool(AMD, "0,5")
    assert make_pool(Detection((), ()), "0-7").ids == tuple(range(8))


def spec() -> ModelSpec:
    return ModelSpec(name="m", source=Path("models.json"), lineno=0, root=Path("."), dockerfile="d", scripts="run.sh")


def container_options(arch: str, lease: Lease) -> dict[str, Any]:
    """The docker SDK's create arguments for a model on `arch` holding `lease`."""
    model, context = spec(), RunContext()
    environment = model_environment(model, arch, lease, context, HostFacts())
    return docker_options(prepare_run(model, "img", lease, environment, RunIdentity("run", "gw0", "id"), context))


def test_amd_lease_passes_kfd_and_the_leased_render_nodes() -> None:
    pool = make_pool(AMD, None)
    lease = pool.lease((1, 3), "AMD")
    options = container_options("gfx942", lease)
    assert options["devices"] == [
        "/dev/kfd:/dev/kfd:rwm",
        "/dev/dri/renderD136:/dev/dri/renderD136:rwm",
        "/dev/dri/renderD152:/dev/dri/renderD152:rwm",
    ]
    assert options["group_add"] == ["video"]
    env = options["environment"]
    assert (env["MAD_RUNTIME_NGPUS"], env["MAD_SYSTEM_NGPUS"], env["MAD_HOST_GPU_IDS"]) == ("2", "4", "1,3")
    assert env["MAD_SYSTEM_GPU_PRODUCT_NAME"] == "AMD Instinct MI300X"


def test_nvidia_lease_requests_exactly_the_leased_ids() -> None:
    lease = make_pool(NVIDIA, None).lease((1,), "NVIDIA")
    options = container_options("sm_90", lease)
    (request,) = options["device_requests"]
    assert request["DeviceIDs"] == ["1"] and request["Capabilities"] == [["gpu"]]
    assert "devices" not in options


def test_no_devices_for_another_vendor_or_a_host_without_gpus() -> None:
    assert "device_requests" not in container_options("gfx942", make_pool(NVIDIA, None).lease((0,), "AMD"))
    lease = make_pool(Detection((), ()), "0-3").lease((0, 1), "AMD")
    options = container_options("gfx942", lease)
    assert "devices" not in options and options["environment"]["MAD_RUNTIME_NGPUS"] == "2"


# --- the allocator ----------------------------------------------------------------------------

WORKER = """
import json, sys, time
from pathlib import Path
from pytest_madengine.gpus.allocator import GpuAllocator, Scheduling
state, pool, log, counts, hold = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
alloc = GpuAllocator(Path(state), tuple(int(i) for i in pool.split(",")), scheduling=Scheduling(poll_interval=0.01))
for n in [int(c) for c in counts.split(",")]:
    grant = alloc.acquire(n)
    start = time.time()
    time.sleep(hold)
    end = time.time()
    alloc.release(grant)
    with open(log, "a") as f:
        f.write(json.dumps({"ids": list(grant.ids), "start": start, "end": end, "n": n}) + "\\n")
"""


def test_leases_are_exclusive_across_processes(tmp_path: Path) -> None:
    """Four processes lease from one pool; each logs its own hold times (its own clock)."""
    log = tmp_path / "leases.jsonl"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = []
    try:
        for counts in ("1,2,4,1,1", "2,1,1,4,2", "4,1,2,1,1", "1,1,3,2,1"):
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(tmp_path / "state"), "0,1,2,3", str(log), counts, "0.05"]
                )
            )
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    leases = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(leases) == 20
    assert all(len(lease["ids"]) == lease["n"] for lease in leases)
    for i, a in enumerate(leases):
        for b in leases[i + 1 :]:
            if set(a["ids"]) & set(b["ids"]):
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)


# Bigger-first and bounded overtaking: tests/test_gpu_scheduling.py drives them in lockstep.


def _process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[0]


def test_a_killed_holder_gives_its_gpus_back(tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(
        "import time\nfrom pathlib import Path\nfrom pytest_madengine.gpus.allocator import GpuAllocator, Scheduling\n"
        f"a = GpuAllocator(Path({str(tmp_path)!r}), (0, 1))\n"
        "a.acquire(2)\nprint('held', flush=True)\ntime.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        alloc = GpuAllocator(tmp_path, (0, 1), scheduling=Scheduling(poll_interval=0.01))
        assert list(alloc.held().values()) == [(0, 1)]
        holder.send_signal(signal.SIGKILL)
        # Not reaped yet (no wait() until the end): a zombie, which must count as dead anyway.
        wait_until(lambda: _process_state(holder.pid) == "Z", 30, "the killed holder to become a zombie")
        grants: list[Grant] = []
        taker = threading.Thread(target=lambda: grants.append(alloc.acquire(2)), daemon=True)
        taker.start()
        taker.join(timeout=60)  # a deadline: if the dead holder were never reaped, this fails, not hangs
        assert [g.ids for g in grants] == [(0, 1)], "the killed holder's GPUs never came back"
    finally:
        holder.kill()
        holder.wait()


def test_token_of_this_process_is_alive() -> None:
    from pytest_madengine.gpus.allocator import process_token

    assert token_alive(process_token())
    assert not token_alive("999999999:1")


# --- the plugin on fake hosts -----------------------------------------------------------------


@pytest.fixture
def gpu_zoo(zoo: Zoo) -> Zoo:
    zoo.dockerfile(vendors=("amd", "nvidia"))
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m", n_gpus="1")])
    return zoo


@pytest.mark.parametrize(
    ("host", "header", "items"),
    [
        ("mi300x_8", "madengine GPUs: 8 x AMD gfx942 (AMD Instinct MI300X)", ["models.json::m[[]gfx942[]]"]),
        ("h100_2", "madengine GPUs: 2 x NVIDIA sm_90 (NVIDIA H100 80GB HBM3)", ["models.json::m[[]sm_90[]]"]),
        (
            "none",
            "madengine GPUs: none detected",
            ["models.json::m[[]cpu-ubuntu.amd[]]", "models.json::m[[]cpu-ubuntu.nvidia[]]"],
        ),
    ],
)
def test_header_and_archs_follow_the_host(
    pytester: pytest.Pytester, gpu_zoo: Zoo, on_host: Callable[[str], None], host: str, header: str, items: list[str]
) -> None:
    on_host(host)
    result = pytester.runpytest_subprocess("--collect-only")
    result.stdout.fnmatch_lines([header])
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    result.stdout.fnmatch_lines(items)


def test_a_hanging_probe_is_a_warning_naming_the_tool_and_its_limit(
    pytester: pytest.Pytester, gpu_zoo: Zoo, on_host: Callable[[str], None]
) -> None:
    on_host("amd_hang")
    # 3 s: the healthy tools (rocminfo, rocm-smi) must answer within the same limit on a loaded machine.
    result = pytester.runpytest_subprocess("--collect-only", "--madengine-probe-timeout", "3")
    result.stdout.fnmatch_lines(["madengine GPUs: 4 x AMD gfx90a*"])
    result.stdout.re_match_lines([r"madengine GPU detection warning: amd-smi\b.*\btimed out\b.*\b3(\.0)? ?s"])
    result.stdout.fnmatch_lines(["*m[[]gfx90a[]]*"])


def test_n_auto_starts_one_worker_per_gpu(
    pytester: pytest.Pytester, gpu_zoo: Zoo, on_host: Callable[[str], None]
) -> None:
    on_host("mi300x_8")
    # -k deselects every item: xdist still starts its workers, nothing runs.
    result = pytester.runpytest_subprocess("-n", "auto", "-k", "no_such_model")
    result.stdout.fnmatch_lines(["created: 8/8 workers"])
    on_host("none")
    result = pytester.runpytest_subprocess("-n", "auto", "-k", "no_such_model", "--madengine-gpus", "0-2")
    result.stdout.fnmatch_lines(["created: 3/3 workers"])
    result = pytester.runpytest_subprocess("-n", "auto", "-k", "no_such_model")
    result.stdout.fnmatch_lines(["created: 1/1 worker"])


def test_arch_not_on_host_is_skipped_unless_no_gpu_or_explicit_pool(
    pytester: pytest.Pytester, zoo: Zoo, on_host: Callable[[str], None]
) -> None:
    on_host("none")
    zoo.script("g/run.sh")
    zoo.script("c/run.sh")
    zoo.models([zoo.model("g", n_gpus="1"), zoo.model("c", n_gpus="0")])
    result = pytester.runpytest_subprocess("--madengine-arch", "gfx90a", "--madengine-perf-csv", "perf.csv", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] models.json:*: host has no gfx90a GPU"])
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert (rows["g"]["status"], rows["g"]["reason"]) == ("SKIPPED", "host has no gfx90a GPU")
    assert rows["c"]["status"] == "SUCCESS"


ENV_SCRIPT = (
    "#!/bin/bash\n"
    'echo "ids=$MAD_HOST_GPU_IDS n=$MAD_RUNTIME_NGPUS sys=$MAD_SYSTEM_NGPUS product=$MAD_SYSTEM_GPU_PRODUCT_NAME"\n'
    "echo 'performance: 1 x'\n"
)


def test_too_many_gpus_is_skipped_and_skip_gpu_arch_honoured(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("m/run.sh", ENV_SCRIPT)
    zoo.models(
        [
            zoo.model("big", script="scripts/m/run.sh", n_gpus="8"),
            zoo.model("all", script="scripts/m/run.sh", n_gpus="-1"),
            zoo.model("notmine", script="scripts/m/run.sh", n_gpus="1", skip_gpu_arch="gfx908, gfx90a"),
        ]
    )
    args = ("--madengine-arch", "gfx90a", "--madengine-gpus", "0-3", "--madengine-perf-csv", "perf.csv", "-rA")
    result = pytester.runpytest_subprocess(*args, "--junitxml=j.xml")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["ids=0,1,2,3 n=4 sys=4 *"])
    result.stdout.fnmatch_lines(["SKIPPED*: needs 8 GPUs, the pool has 4"])
    result.stdout.fnmatch_lines(["SKIPPED*: model not supported on gfx90a: skip_gpu_arch lists gfx90a"])
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert (rows["big"]["status"], rows["big"]["reason"]) == ("SKIPPED", "needs 8 GPUs, the pool has 4")
    assert rows["all"]["n_gpus"] == "4"
    assert '<property name="gpus" value="0,1,2,3"' in (pytester.path / "j.xml").read_text()
    assert labelled_containers(docker_client, run_id_of(pytester.path)) == []
    result = pytester.runpytest_subprocess(*args, "-k", "notmine", "--madengine-ignore-skip-gpu-arch")
    result.assert_outcomes(passed=1)
    assert labelled_containers(docker_client, run_id_of(pytester.path)) == []


# The fake host's GPUs name devices (/dev/kfd, render nodes) this machine lacks: a conftest hook
# keeps them out of the container, so the model runs and shows what else it was given.
NO_DEVICES = """
def pytest_madengine_container_options(item, spec, options):
    options.pop("devices", None)
    options.pop("group_add", None)
"""


def test_the_container_is_told_the_detected_gpu_product(
    pytester: pytest.Pytester, zoo: Zoo, on_host: Callable[[str], None]
) -> None:
    on_host("mi300x_8")
    pytester.makeconftest(NO_DEVICES)
    zoo.script("m/run.sh", ENV_SCRIPT)
    zoo.models([zoo.model("m", n_gpus="1")])
    result = pytester.runpytest_subprocess("-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["ids=0 n=1 sys=8 product=AMD Instinct MI300X"])


def test_the_docker_gpus_context_key_is_the_pool(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh", ENV_SCRIPT)
    zoo.models([zoo.model("all", script="scripts/m/run.sh", n_gpus="-1")])
    context = json.dumps({"docker_gpus": "1,3"})
    result = pytester.runpytest_subprocess("--madengine-arch", "gfx942", "--madengine-context", context, "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["ids=1,3 n=2 sys=2 *"])


def test_a_killed_worker_releases_its_gpus(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("slow/run.sh", "#!/bin/bash\nsleep 120\n")
    zoo.script("quick/run.sh", "#!/bin/bash\necho 'performance: 1 x'\n")
    zoo.models([zoo.model("slow", n_gpus="1"), zoo.model("quick", n_gpus="1")])
    proc = start_session(
        pytester.path,
        *("--madengine-arch", "gfx942", "--madengine-gpus", "0", "-n", "4", "-p", "no:cacheprovider"),
        *("--madengine-perf-csv", "perf.csv", "-v"),
    )
    run_id = ""
    try:
        run_id = run_id_of(pytester.path)
        victims: list[int] = []

        def slow_started() -> bool:
            victims.extend(
                int(c["Labels"]["pytest-madengine.pid"])
                for c in labelled_containers(docker_client, run_id)
                if c["State"] == "running" and "slow" in c["Labels"].get("pytest-madengine.test", "")
            )
            return bool(victims)

        wait_until(slow_started, 90, "the slow model's container running")
        os.kill(victims[0], signal.SIGKILL)  # the worker that runs it
        text, _ = proc.communicate(timeout=120)
    finally:
        kill_session(proc)
        if run_id:
            remove_run(docker_client, run_id)
    assert re.search(r"PASSED models.json::quick\[gfx942\]", text), text
    assert "worker 'gw" in text and "crashed while running 'models.json::slow[gfx942]'" in text
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert rows["quick"]["status"] == "SUCCESS"
    assert (rows["slow"]["status"], rows["slow"]["reason"], rows["slow"]["gpu_architecture"]) == (
        "FAILURE",
        "worker crashed",
        "gfx942",
    )
    assert labelled_containers(docker_client, run_id) == []

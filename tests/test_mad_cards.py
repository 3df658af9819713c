"""MAD's cards get the container madengine gives them: its run options, the card's own, its environment.

Each card's script checks inside the container what it was given and prints a performance line only
when all of it holds; the test compares what the container saw with this host where that matters
(namespaces), so the container's own view is the judge.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from zoo import EngineEvents, Zoo, bare_repo, git_image, read_perf, wait_until

GPUS = ("--madengine-arch", "gfx942", "--madengine-gpus", "0-3")

# Prints what the container is: namespaces, capabilities, shm, user, cwd, limits, mounts, env.
PROBE = """#!/bin/bash
echo "ipc: $(readlink /proc/self/ns/ipc)"
echo "net: $(readlink /proc/self/ns/net)"
echo "caps: $(grep CapEff /proc/self/status | cut -f2)"
echo "shm: $(df -k /dev/shm | tail -1 | awk '{print $2}')"
echo "uid: $(id -u) cwd: $(pwd)"
echo "nofile: $(ulimit -n)"
echo "env: CARD_ENV=$CARD_ENV runner=[$MAD_MULTI_NODE_RUNNER] guest=$MAD_GUEST_OS rocm=$ROCM_PATH"
echo "hidden: [${HIP_VISIBLE_DEVICES-unset}] [${CUDA_VISIBLE_DEVICES-unset}]"
echo "passed: NCCL_DEBUG=$NCCL_DEBUG MASTER_PORT=$MASTER_PORT"
echo "cpus: $(grep Cpus_allowed_list /proc/self/status | cut -f2)"
echo "mount: $(grep ' /card_data ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
echo "device: $(test -c /dev/card_null && echo yes || echo no)"
cat /card_data/f.txt 2>/dev/null
"""

# Checks a card makes inside its container: `want NAME ACTUAL EXPECTED` for each; the performance
# line comes only when every one holds, so a model whose container is wrong fails by itself.
CHECKS = """
fail=0
want() {
  if [ "$2" = "$3" ]; then echo "check ok: $1"; else echo "check failed: $1 is [$2], wanted [$3]"; fail=1; fi
}
"""
IPC_IS_HOST = '$([ "$(readlink /proc/self/ns/ipc)" = {host} ] && echo host || echo private)'
NET_IS_HOST = '$([ "$(readlink /proc/self/ns/net)" = {host} ] && echo host || echo private)'
CAP = "$(( 0x$(grep CapEff /proc/self/status | cut -f2) >> {bit} & 1 ))"
SHM_KB = "$(df -k /dev/shm | tail -1 | awk '{print $2}')"
SECCOMP = "$(grep ^Seccomp: /proc/self/status | cut -f2)"  # 0: unconfined, 2: a filter
CARD_DEVICE = "$(test -c /dev/card_null && echo yes)"


def checking(body: str, wants: dict[str, tuple[str, str]], performance: str = "1 checks") -> str:
    """`body`, then a check of each `name: (shell expression, expected text)` inside the container,
    then the performance line only when all of them held."""
    lines = [body.rstrip("\n"), CHECKS]
    lines += [f'want {name} "{actual}" {shlex.quote(expected)}' for name, (actual, expected) in wants.items()]
    lines.append(f'[ "$fail" = 0 ] && echo "performance: {performance}"')
    return "\n".join(lines) + "\n"


def host_namespace(kind: str) -> str:
    return shlex.quote(os.readlink(f"/proc/self/ns/{kind}"))


def seen(lines: list[str], model: str) -> dict[str, str]:
    """The probe's `key: value` lines of one model, from -rA's captured output sections."""
    out: dict[str, str] = {}
    inside = False
    for line in lines:
        if line.startswith("_") and "[gfx942]" in line:
            inside = f" {model}[gfx942] " in line
        elif inside and ": " in line and not line.startswith(("-", "=")):
            key, _, value = line.partition(": ")
            out.setdefault(key, value)
    return out


def capability(mask: str, bit: int) -> bool:
    return bool(int(mask, 16) >> bit & 1)


SYS_PTRACE, SYS_ADMIN = 19, 21


def test_a_card_gets_madengines_defaults_and_its_own_run_options(
    pytester: pytest.Pytester, zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "data").mkdir()
    (pytester.path / "data" / "f.txt").write_text("card-data\n")
    ipc, net = IPC_IS_HOST.format(host=host_namespace("ipc")), NET_IS_HOST.format(host=host_namespace("net"))
    common = {
        "net": (net, "host"),
        "ptrace": (CAP.format(bit=SYS_PTRACE), "1"),
        "admin": (CAP.format(bit=SYS_ADMIN), "1"),
        "uid": ("$(id -u)", "0"),
        "cwd": ("$(pwd)", "/myworkspace/run_directory"),
        "guest": ("$MAD_GUEST_OS", "UBUNTU"),
        "rocm": ("$ROCM_PATH", "/opt/rocm"),
        "host-ids": ("${HIP_VISIBLE_DEVICES-unset} ${CUDA_VISIBLE_DEVICES-unset}", "unset unset"),
        "passed": ("$NCCL_DEBUG $MASTER_PORT", "INFO 29511"),
        "cpus": ("$(grep Cpus_allowed_list /proc/self/status | cut -f2)", "0"),
        "video": ("$(id -G | tr ' ' '\\n' | grep -x 44)", "44"),  # the image's video group
        "seccomp": (SECCOMP, "0"),  # unconfined
        "fuse": ("$(test -c /dev/fuse && echo yes)", "yes" if Path("/dev/fuse").exists() else ""),
    }
    card_wants = {
        **common,
        "ipc": (ipc, "private"),  # the card sizes its own /dev/shm
        "shm": (SHM_KB, str(1024 * 1024)),
        "nofile": ("$(ulimit -n)", "4096"),
        "env": ("$CARD_ENV", "from-card"),
        "runner": ("$MAD_MULTI_NODE_RUNNER", "torchrun --standalone --nproc_per_node=2"),
        "mount": ("$(grep ' /card_data ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)", "ro"),
        "data": ("$(cat /card_data/f.txt)", "card-data"),
        "device": (CARD_DEVICE, "yes"),
    }
    plain_wants = {
        **common,
        "ipc": (ipc, "host"),
        "runner": ("$MAD_MULTI_NODE_RUNNER", "torchrun --standalone --nproc_per_node=1"),
        "device": (CARD_DEVICE, ""),
    }
    zoo.script("card/run.sh", checking(PROBE, card_wants))
    zoo.script("plain/run.sh", checking(PROBE, plain_wants))
    options = (
        f"--shm-size=1g -e CARD_ENV=from-card --device /dev/null:/dev/card_null --ulimit nofile=4096:4096 "
        f"-v {pytester.path / 'data'}:/card_data:ro --rm"
    )
    zoo.models(
        [
            zoo.model("card", n_gpus=2, additional_docker_run_options=options, distributed={"launcher": "torchrun"}),
            zoo.model("plain", n_gpus=1),
        ]
    )
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "3")  # host ids: never passed in
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    monkeypatch.setenv("MASTER_PORT", "29511")
    context = json.dumps({"docker_cpus": "0"})
    result = pytester.runpytest_subprocess(
        *GPUS, "--madengine-perf-csv", "perf.csv", "-rA", "--madengine-context", context, timeout=300
    )
    result.assert_outcomes(passed=2)
    card, plain = seen(result.outlines, "card"), seen(result.outlines, "plain")
    host_ipc, host_net = os.readlink("/proc/self/ns/ipc"), os.readlink("/proc/self/ns/net")
    # madengine's defaults for both: host IPC (unless the card sizes its own /dev/shm) and network,
    # root, ptrace and admin capabilities.
    assert plain["ipc"] == host_ipc and card["ipc"] != host_ipc
    for got in (card, plain):
        assert got["net"] == host_net
        assert capability(got["caps"], SYS_PTRACE) and capability(got["caps"], SYS_ADMIN)
        assert got["uid"].startswith("0 ")
        assert got["hidden"] == "[unset] [unset]"
        assert got["passed"] == "NCCL_DEBUG=INFO MASTER_PORT=29511"
        assert got["cpus"] == "0"  # the context's docker_cpus
    # The card's own options on top.
    assert card["shm"] == str(1024 * 1024)
    assert card["nofile"] == "4096"
    assert card["mount"] == "ro" and "card-data" in result.stdout.str()
    assert card["device"] == "yes" and plain["device"] == "no"
    assert (
        card["env"]
        == "CARD_ENV=from-card runner=[torchrun --standalone --nproc_per_node=2] guest=UBUNTU rocm=/opt/rocm"
    )
    # Each model's launcher from its own lease (madengine reuses the first model's for all).
    assert plain["env"].startswith("CARD_ENV= runner=[torchrun --standalone --nproc_per_node=1]")
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert rows["card"]["additional_docker_run_options"] == options


def test_strict_isolation_gives_dockers_defaults_and_a_big_shm(pytester: pytest.Pytester, zoo: Zoo) -> None:
    strict = {
        "ipc": (IPC_IS_HOST.format(host=host_namespace("ipc")), "private"),
        "net": (NET_IS_HOST.format(host=host_namespace("net")), "private"),
        "admin": (CAP.format(bit=SYS_ADMIN), "0"),
        "seccomp": (SECCOMP, "2"),  # Docker's default filter
        "shm": (SHM_KB, str(8 * 1024 * 1024)),
    }
    zoo.script("m/run.sh", checking(PROBE, strict))
    zoo.models([zoo.model("m", n_gpus=1)])
    pytester.makeini("[pytest]\nmadengine_isolation = strict\n")
    result = pytester.runpytest_subprocess(*GPUS, "--madengine-perf-csv", "perf.csv", "-rA", timeout=300)
    result.assert_outcomes(passed=1)
    got = seen(result.outlines, "m")
    assert got["ipc"] != os.readlink("/proc/self/ns/ipc") and got["net"] != os.readlink("/proc/self/ns/net")
    assert not capability(got["caps"], SYS_ADMIN)
    assert got["shm"] == str(8 * 1024 * 1024)
    # The option wins over the ini.
    result = pytester.runpytest_subprocess(
        *GPUS, "--madengine-perf-csv", "perf.csv", "-rA", "--madengine-isolation", "madengine", timeout=300
    )
    assert seen(result.outlines, "m")["ipc"] == os.readlink("/proc/self/ns/ipc")
    result.assert_outcomes(failed=1)  # the card's own checks caught the host IPC
    result.stdout.fnmatch_lines(["check failed: ipc is [[]host[]], wanted [[]private[]]"])


def test_an_unsupported_run_option_is_a_one_line_setup_error(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m", additional_docker_run_options="--shm-size 1g --oom-score-adj 5")])
    result = pytester.runpytest_subprocess(*GPUS, "--madengine-perf-csv", "perf.csv", timeout=300)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*models.json: model 'm': field 'additional_docker_run_options': unsupported flag '--oom-score-adj'*"]
    )
    assert "Traceback" not in result.stdout.str()
    assert read_perf(pytester.path / "perf.csv")[0]["reason"] == "bad additional_docker_run_options"


def test_a_field_nothing_reads_is_named_once(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh")
    zoo.models(
        [zoo.model("a", script="scripts/m/run.sh", mystery=1), zoo.model("b", script="scripts/m/run.sh", mystery=2)]
    )
    result = pytester.runpytest_subprocess(*GPUS, "--collect-only", "-q", timeout=120)
    assert result.stdout.str().count("field 'mystery' is not used by pytest-madengine") == 1


LIVE = """#!/bin/bash
for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 1; done
echo "performance: 1 ticks"
"""


def test_live_output_reaches_the_terminal_and_the_log_while_the_model_runs(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh", LIVE)
    zoo.models([zoo.model("m", n_gpus=0)])
    log = pytester.path / "madengine_logs" / "m_dummy.ubuntu.amd.gfx942.run.log"
    out = (pytester.path / "out.txt").open("w")
    process = pytester.popen(
        [sys.executable, "-m", "pytest", *GPUS, "--madengine-perf-csv", "perf.csv", "-p", "no:cacheprovider", "-s"],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        # While the model still runs (it ends with its performance line), its first lines are there.
        wait_until(lambda: log.exists() and "tick 2" in log.read_text(), 60, "tick 2 in the log")
        assert "performance" not in log.read_text()
        wait_until(lambda: "tick 2" in (pytester.path / "out.txt").read_text(), 60, "tick 2 on the terminal")
        assert "performance" not in (pytester.path / "out.txt").read_text()  # the model still runs
        assert process.poll() is None
    finally:
        try:
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            out.close()
    assert process.returncode == 0
    assert "tick 6" in log.read_text() and "performance: 1 ticks" in log.read_text()


DATA_PROBE = """#!/bin/bash
echo "data: $MAD_DATANAME at $MAD_DATAHOME, mounted $(grep " $MAD_DATAHOME " /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
cat "$MAD_DATAHOME"/*.txt
"""


def test_data_from_local_and_custom_providers(pytester: pytest.Pytester, zoo: Zoo) -> None:
    (pytester.path / "datasets").mkdir()
    (pytester.path / "datasets" / "local.txt").write_text("local-bytes\n")
    zoo.script("common/make_data.sh", '#!/bin/bash\nfor i in $(seq "$1"); do echo "made $i" > "made$i.txt"; done\n')
    mounted = "$(grep \" $MAD_DATAHOME \" /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
    wants = {
        "loc": {
            "name": ("$MAD_DATANAME", "ds_local"),
            "home": ("$(pwd) $MAD_DATAHOME", "/myworkspace/run_directory /data_dlm_0"),
            "mount": (mounted, "ro"),
            "bytes": ('$(cat "$MAD_DATAHOME/local.txt")', "local-bytes"),
        },
        "gen": {
            "name": ("$MAD_DATANAME", "ds_custom"),
            "made": ('$(cat "$MAD_DATAHOME/made1.txt" "$MAD_DATAHOME/made2.txt")', "made 1\nmade 2"),
        },
        "hub1": {"name": ("$MAD_DATANAME", "ds_hub")},
        "hub2": {"name": ("$MAD_DATANAME", "ds_hub")},
    }
    for name, checks in wants.items():
        zoo.script(f"{name}/run.sh", checking(DATA_PROBE, checks, "1 reads"))
    (pytester.path / "data.json").write_text(
        json.dumps(
            {
                "ds_local": {"local": {"path": str(pytester.path / "datasets")}},
                "ds_custom": {"custom": {"path": "scripts/common/make_data.sh", "args": "2"}},
                "ds_hub": {"huggingface": {}},
            }
        )
    )
    zoo.models(
        [
            zoo.model("loc", data="ds_local"),
            zoo.model("gen", data="ds_custom"),
            zoo.model("hub1", data="ds_hub", scripts="scripts/hub1/run.sh"),
            zoo.model("hub2", data="ds_hub", scripts="scripts/hub2/run.sh"),
        ]
    )
    result = pytester.runpytest_subprocess(*GPUS, "--madengine-perf-csv", "perf.csv", "-rA", timeout=300)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "data: ds_local at /data_dlm_0, mounted ro",
            "local-bytes",
            "made 1",
            "made 2",
        ]
    )
    assert result.stdout.str().count("data 'ds_hub': no usable provider in data.json") == 1  # once per name
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert (rows["loc"]["dataname"], rows["loc"]["data_provider_type"]) == ("ds_local", "local")
    assert (rows["gen"]["dataname"], rows["gen"]["data_provider_type"]) == ("ds_custom", "custom")
    assert rows["loc"]["data_size"] and rows["gen"]["data_size"] and rows["gen"]["data_download_duration"].isdigit()
    assert (rows["hub1"]["data_provider_type"], rows["hub1"]["data_size"]) == ("none", "")


def test_a_remote_data_provider_is_a_setup_error_naming_it(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh")
    (pytester.path / "data.json").write_text(json.dumps({"ds": {"nas": {"path": "/mnt/nas/ds"}}}))
    zoo.models([zoo.model("m", data="ds")])
    result = pytester.runpytest_subprocess(*GPUS, "--madengine-perf-csv", "perf.csv", timeout=300)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*model 'm': field 'data': 'ds' needs the nas provider*"])
    assert "Traceback" not in result.stdout.str()
    assert read_perf(pytester.path / "perf.csv")[0]["reason"] == "data provider"


FAKEPROF = {
    "tools": {
        "fakeprof": {
            "pre_scripts": [{"path": "scripts/common/fakeprof_pre.sh", "args": "warm up"}],
            "cmd": "bash ../scripts/common/fakeprof.sh",
            "env_vars": {"FAKEPROF_MODE": "deep"},
            "post_scripts": [{"path": "scripts/common/fakeprof_post.sh"}],
        }
    }
}


def test_a_tool_wraps_the_model_and_its_output_comes_back(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("common/fakeprof_pre.sh", '#!/bin/bash\necho "fakeprof pre $FAKEPROF_MODE $*"\n')
    zoo.script(
        "common/fakeprof.sh",
        '#!/bin/bash\necho "fakeprof wrapping: $*"\necho sample > "$MAD_TOOL_OUTPUT/profile.txt"\n'
        'FAKEPROF_WRAPPED=yes exec "$@"\n',
    )
    zoo.script("common/fakeprof_post.sh", '#!/bin/bash\necho "fakeprof post: $(cat "$MAD_TOOL_OUTPUT/profile.txt")"\n')
    tool_wants = {
        "mode": ("$FAKEPROF_MODE", "deep"),
        "output": ('$(cat "$MAD_TOOL_OUTPUT/profile.txt")', "sample"),
        "wrapped": ("$FAKEPROF_WRAPPED", "yes"),
    }
    zoo.script("m/run.sh", checking('#!/bin/bash\necho "model sees $FAKEPROF_MODE"\n', tool_wants, "2 x"))
    zoo.models([zoo.model("m", n_gpus=1)])
    (pytester.path / "mytools.json").write_text(json.dumps(FAKEPROF))
    args = ("--madengine-tools-file", "mytools.json", "--madengine-tools", "fakeprof", "--junitxml=j.xml", "-rA")
    result = pytester.runpytest_subprocess(*GPUS, "--madengine-perf-csv", "perf.csv", *args, timeout=300)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "fakeprof pre deep warm up",
            "fakeprof wrapping: bash run.sh",
            "model sees deep",
            "performance: 2 x",
            "fakeprof post: sample",
        ]
    )
    artifacts = pytester.path / "madengine_logs" / "m_gfx942_" / "madengine_output" / "profile.txt"
    assert artifacts.read_text() == "sample\n"
    junit = (pytester.path / "j.xml").read_text()
    assert f'name="artifacts" value="{artifacts.parent}"' in junit


def test_an_unknown_tool_is_a_usage_error_listing_the_known_ones(pytester: pytest.Pytester, zoo: Zoo) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m")])
    result = pytester.runpytest_subprocess(*GPUS, "--madengine-tools", "nosuch", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--madengine-tools: unknown tool nosuch; known: nsys, rocm-smi, rocprof, rocprofv3, rpd"]
    )


def test_a_card_with_a_url_runs_in_its_clone(pytester: pytest.Pytester, zoo: Zoo) -> None:
    git_image(zoo)
    commit = bare_repo(pytester.path / "repos")
    clone_wants = {
        "cwd": ("$(pwd)", "/myworkspace/model.git"),
        "train": ("$(cat train.py)", "print('from the repo')"),
        "commit": ("$(git rev-parse HEAD)", commit),
    }
    zoo.script("m/run.sh", checking('#!/bin/bash\necho "cwd: $(pwd)"\ncat train.py\n', clone_wants, "3 clones"))
    zoo.script("nogit/run.sh")
    mount = f"-v {pytester.path / 'repos'}:/repos:ro"
    zoo.models(
        [
            zoo.model("m", dockerfile="docker/withgit", url="/repos/model.git", additional_docker_run_options=mount),
            zoo.model("nogit", url="/repos/model.git", additional_docker_run_options=mount),
        ]
    )
    result = pytester.runpytest_subprocess(*GPUS, "--madengine-perf-csv", "perf.csv", "-rA", timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["cwd: /myworkspace/model.git", "print('from the repo')"])
    result.stdout.fnmatch_lines(["*the card has a url, and git is not in the image*"])
    rows = {r["model"]: r for r in read_perf(pytester.path / "perf.csv")}
    assert (rows["m"]["status"], rows["m"]["git_commit"]) == ("SUCCESS", commit)
    assert (rows["nogit"]["status"], rows["nogit"]["reason"]) == ("FAILURE", "exit code 127")


def test_mad_container_image_runs_that_image_and_builds_nothing(
    pytester: pytest.Pytester, zoo: Zoo, docker_client: docker.DockerClient
) -> None:
    zoo.script("m/run.sh")
    zoo.models([zoo.model("m", dockerfile="docker/not-there")])  # no Dockerfile is needed
    context = json.dumps({"MAD_CONTAINER_IMAGE": "pytest-madengine/busybox:latest"})
    with EngineEvents(docker_client, {"type": ["image"]}) as events:
        result = pytester.runpytest_subprocess(
            *GPUS, "--madengine-perf-csv", "perf.csv", "--madengine-context", context, timeout=300
        )
    result.assert_outcomes(passed=1)
    names = [str(e.get("Actor", {}).get("Attributes", {}).get("name", "")) for e in events.events]
    assert [n for n in names if "not-there" in n] == []  # no image of this model was tagged (built)
    assert read_perf(pytester.path / "perf.csv")[0]["docker_image"] == "pytest-madengine/busybox:latest"

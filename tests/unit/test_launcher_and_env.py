"""MAD_MULTI_NODE_RUNNER, the HIP version, and the environment a model gets from the host."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pytest_madengine.engine.prepare import HostFacts, model_environment
from pytest_madengine.gpus.detect import hip_version, major_minor
from pytest_madengine.gpus.lease import Lease
from pytest_madengine.gpus.probe import Prober
from pytest_madengine.zoo.context import RunContext
from pytest_madengine.zoo.launcher import launcher_of, multi_node_runner
from pytest_madengine.zoo.models import ModelSpec


@pytest.mark.parametrize(
    ("launcher", "runner"),
    [
        ("", "torchrun --standalone --nproc_per_node=4"),
        ("torchrun", "torchrun --standalone --nproc_per_node=4"),
        ("megatron-lm", "torchrun --standalone --nproc_per_node=4"),
        ("something-new", "torchrun --standalone --nproc_per_node=4"),
        ("deepspeed", "deepspeed --num_gpus=4"),
        ("vllm", ""),
        ("sglang", ""),
        ("primus", ""),
    ],
)
def test_runner_per_launcher(launcher: str, runner: str) -> None:
    assert multi_node_runner(launcher, 4) == runner


def test_the_launcher_comes_from_the_context_then_the_card_then_the_host() -> None:
    card = {"distributed": {"launcher": "DeepSpeed"}}
    assert launcher_of(card, {"distributed": {"launcher": "vllm"}}, {"MAD_LAUNCHER": "primus"}) == "vllm"
    assert launcher_of(card, {}, {"MAD_LAUNCHER": "primus"}) == "deepspeed"
    assert launcher_of({}, {}, {"MAD_LAUNCHER": "primus"}) == "primus"


@pytest.mark.parametrize(("text", "version"), [("6.2.41133-dd7f95766\n", "6.2"), ("HIP version: 5.7", ""), ("", "")])
def test_major_minor(text: str, version: str) -> None:
    assert major_minor(text) == version


def test_hip_version_from_hipconfig_then_the_version_file_then_rocm(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    info = tmp_path / "version"
    prober = Prober({"PATH": str(tools)}, 5.0)
    assert hip_version(prober, "6.1.2", info) == "6.1"
    info.write_text("6.3.0-39\n")
    assert hip_version(prober, "6.1.2", info) == "6.3"
    hipconfig = tools / "hipconfig"
    hipconfig.write_text("#!/bin/sh\necho 6.4.43482-0f2d60242\n")
    hipconfig.chmod(0o755)
    assert hip_version(Prober({"PATH": str(tools)}, 5.0), "6.1.2", info) == "6.4"


def test_host_ids_never_reach_the_container_and_the_context_wins() -> None:
    spec = ModelSpec(name="m", source=Path("models.json"), lineno=0, root=Path("."), dockerfile="d", scripts="run.sh")
    host = HostFacts(
        environ={"HIP_VISIBLE_DEVICES": "3", "CUDA_VISIBLE_DEVICES": "1", "NCCL_IB_DISABLE": "1", "RANK": "0"},
        hip_version="6.2",
    )
    context = RunContext(docker_env_vars={"RANK": "7"})
    env = model_environment(spec, "gfx942", Lease((0, 1)), context, host)
    assert "HIP_VISIBLE_DEVICES" not in env and "CUDA_VISIBLE_DEVICES" not in env
    assert (env["NCCL_IB_DISABLE"], env["RANK"], env["MAD_SYSTEM_HIP_VERSION"]) == ("1", "7", "6.2")
    assert (env["ROCM_PATH"], env["MAD_MULTI_NODE_RUNNER"]) == ("/opt/rocm", "torchrun --standalone --nproc_per_node=2")


ROCMINFO = """ROCk module version 6.10.5 is loaded
=====================
HSA System Attributes
=====================
Runtime Version:         1.14
ROCm Version:            6.2.4
"""


def test_hip_version_from_rocminfo_after_the_version_file_before_the_smi(tmp_path: Path) -> None:
    """madengine's third source, `rocminfo | grep -i 'ROCm Version'`; rocminfo's answer from detection
    is reused, not asked again."""
    tools = tmp_path / "bin"
    tools.mkdir()
    asked = tmp_path / "asked"
    rocminfo = tools / "rocminfo"
    rocminfo.write_text(f"#!/bin/sh\necho x >> {asked}\nprintf '%s' {shlex.quote(ROCMINFO)}\n")  # no cat on PATH
    rocminfo.chmod(0o755)
    prober = Prober({"PATH": str(tools)}, 5.0)
    assert prober.run("rocminfo", []).ok  # as GPU detection asks it
    assert hip_version(prober, "6.1.2", tmp_path / "no-version-file") == "6.2"
    assert asked.read_text() == "x\n"
    info = tmp_path / "version"
    info.write_text("6.3.0-39\n")
    assert hip_version(prober, "6.1.2", info) == "6.3"  # the version file comes first
    rocminfo.write_text("#!/bin/sh\necho 'Runtime Version: 1.14'\n")
    assert hip_version(Prober({"PATH": str(tools)}, 5.0), "6.1.2", tmp_path / "none") == "6.1"  # the SMI's last

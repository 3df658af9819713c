"""Dockerfile prefix resolution and the # CONTEXT filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_madengine.zoo.archs import ArchError, parse_arch_list, skipped_arch, vendor_of
from pytest_madengine.zoo.dockerfiles import candidates, read_context_header, select
from pytest_madengine.zoo.models import ModelsFileError, ModelSpec


def spec(root: Path, prefix: str = "docker/dummy") -> ModelSpec:
    return ModelSpec(name="m", source=root / "models.json", lineno=0, root=root, dockerfile=prefix, scripts="x")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "dummy.ubuntu.amd.Dockerfile").write_text(
        "# a comment\n# CONTEXT {'gpu_vendor': 'AMD', 'guest_os': 'UBUNTU'}\nARG BASE_DOCKER=rocm/x:1\nFROM x\n"
    )
    (docker / "dummy.ubuntu.nvidia.Dockerfile").write_text("# CONTEXT {'gpu_vendor': 'NVIDIA'}\nFROM y\n")
    (docker / "dummy.centos.amd.Dockerfile").write_text("# CONTEXT {'gpu_vendor': 'AMD', 'guest_os': 'CENTOS'}\n")
    (docker / "dummy_other.ubuntu.amd.Dockerfile").write_text("FROM z\n")
    return tmp_path


def test_prefix_matches_dot_suffixes_only(root: Path) -> None:
    found = candidates(spec(root))
    assert [d.variant for d in found] == ["centos.amd", "ubuntu.amd", "ubuntu.nvidia"]


@pytest.mark.parametrize(
    ("ctx", "variants"),
    [
        ({"gpu_vendor": "AMD", "guest_os": "UBUNTU"}, ["ubuntu.amd"]),
        ({"gpu_vendor": "NVIDIA", "guest_os": "UBUNTU"}, ["ubuntu.nvidia"]),
        ({"gpu_vendor": "amd", "guest_os": "centos"}, ["centos.amd"]),
        ({"guest_os": "UBUNTU"}, ["ubuntu.amd", "ubuntu.nvidia"]),
    ],
)
def test_context_filter(root: Path, ctx: dict[str, str], variants: list[str]) -> None:
    assert [d.variant for d in select(candidates(spec(root)), ctx)] == variants


def test_a_file_without_header_is_no_wildcard(root: Path) -> None:
    """Chosen by its exact name's <os>.<vendor>, else by nothing: never by every context (issue 13)."""
    (found,) = candidates(spec(root, "docker/dummy_other"))
    assert (found.context, found.exact) == (None, True)
    assert select([found], {"gpu_vendor": "NVIDIA", "guest_os": "CENTOS"}) == []
    assert select([found], {"gpu_vendor": "AMD", "guest_os": "UBUNTU"}) == [found]


def test_header_must_be_in_first_five_lines(tmp_path: Path) -> None:
    path = tmp_path / "late.Dockerfile"
    path.write_text("\n" * 5 + "# CONTEXT {'gpu_vendor': 'AMD'}\n")
    assert read_context_header(path) == {}


def test_a_bad_header_is_read_as_no_header_with_its_reason(root: Path) -> None:
    (root / "docker" / "bad.ubuntu.amd.Dockerfile").write_text("# CONTEXT {'gpu_vendor': AMD}\n")
    (found,) = candidates(spec(root, "docker/bad"))
    assert found.context is None and "not a Python dict literal" in found.header_problem
    # Named exactly, it is still chosen, by its name: AMD yes, NVIDIA no.
    assert select([found], {"gpu_vendor": "AMD", "guest_os": "UBUNTU"}) == [found]
    assert select([found], {"gpu_vendor": "NVIDIA", "guest_os": "UBUNTU"}) == []


def test_prefix_without_files(root: Path) -> None:
    with pytest.raises(ModelsFileError, match=r"model 'm': field 'dockerfile' prefix 'docker/nope' matches no file"):
        candidates(spec(root, "docker/nope"))


def test_base_docker_default(root: Path) -> None:
    amd = next(d for d in candidates(spec(root)) if d.variant == "ubuntu.amd")
    assert amd.default_base_docker() == "rocm/x:1"
    assert amd.base_name == "dummy.ubuntu.amd"


@pytest.mark.parametrize(
    ("arch", "vendor"),
    [("gfx942", "AMD"), ("gfx90a", "AMD"), ("sm_90", "NVIDIA"), ("H100", "NVIDIA"), ("cpu", None)],
)
def test_vendor_of(arch: str, vendor: str | None) -> None:
    assert vendor_of(arch) == vendor


def test_arch_list_parsing() -> None:
    assert parse_arch_list(["gfx90a,gfx942", "gfx942", " sm_90 "]) == ["gfx90a", "gfx942", "sm_90"]
    with pytest.raises(ArchError, match="unknown GPU architecture 'banana'"):
        parse_arch_list(["banana"])


def test_skip_gpu_arch_matching() -> None:
    assert skipped_arch(("gfx908", "gfx942"), "gfx942") == "gfx942"
    assert skipped_arch(("gfx94",), "gfx942") is None
    assert skipped_arch(("A100", "H100"), "sm_90", "NVIDIA H100 80GB HBM3") == "H100"

"""The base images of a Dockerfile, as the engine will resolve them."""

from __future__ import annotations

from pathlib import Path

from pytest_madengine.engine.bases import from_images
from pytest_madengine.engine.images import context_dir_for


def test_build_args_and_defaults_are_substituted() -> None:
    text = "# CONTEXT {}\nARG BASE_DOCKER=rocm/pytorch:latest\nFROM $BASE_DOCKER\nRUN echo\n"
    assert from_images(text, {}) == ["rocm/pytorch:latest"]
    assert from_images(text, {"BASE_DOCKER": "my/base:1"}) == ["my/base:1"]
    assert from_images("ARG TAG\nFROM ubuntu:${TAG:-22.04}\n", {}) == ["ubuntu:22.04"]


def test_stages_scratch_platform_and_continuations() -> None:
    text = (
        "FROM --platform=linux/amd64 builder/img:1 AS build\nRUN make \\\n  all\n"
        "FROM build AS test\nFROM scratch\nCOPY --from=build /x /x\nFROM \\\n  runtime/img:2\n"
    )
    assert from_images(text, {}) == ["builder/img:1", "runtime/img:2"]


def test_args_after_the_first_from_do_not_change_it() -> None:
    assert from_images("ARG B=a\nFROM $B\nARG B=c\nFROM $B\n", {}) == ["a"]


def test_a_dockerfile_copying_from_the_zoos_root_builds_there(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()
    (tmp_path / "scripts" / "primus").mkdir(parents=True)
    (tmp_path / "docker" / "local.txt").write_text("x")
    primus = tmp_path / "docker" / "primus.ubuntu.amd.Dockerfile"
    primus.write_text("FROM x\nCOPY --chown=0:0 scripts/primus /workspace/primus\n")
    plain = tmp_path / "docker" / "plain.ubuntu.amd.Dockerfile"
    plain.write_text("FROM x\nCOPY local.txt /\n")
    assert context_dir_for(tmp_path, "", primus) == tmp_path
    assert context_dir_for(tmp_path, "", plain) == tmp_path / "docker"
    assert context_dir_for(tmp_path, "scripts", primus) == tmp_path / "scripts"  # the card's own wins

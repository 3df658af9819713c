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


def test_the_build_context_follows_madengines_rule(tmp_path: Path) -> None:
    """The card's dockercontext; else the root for a Dockerfile whose path names primus (copy or not);
    else docker/, even for a Dockerfile that copies from the root."""
    zoo = tmp_path / "primus_home" / "zoo"  # a zoo under a directory named primus: only its own paths count
    (zoo / "docker").mkdir(parents=True)
    (zoo / "scripts" / "primus").mkdir(parents=True)
    primus = zoo / "docker" / "primus_pretrain.ubuntu.amd.Dockerfile"
    primus.write_text("FROM x\n")
    plain = zoo / "docker" / "plain.ubuntu.amd.Dockerfile"
    plain.write_text("FROM x\nCOPY scripts/primus /workspace/primus\n")
    assert context_dir_for(zoo, "", primus) == zoo
    assert context_dir_for(zoo, "", plain) == zoo / "docker"
    assert context_dir_for(zoo, "scripts", primus) == zoo / "scripts"  # the card's own wins
    bare = tmp_path / "bare"  # a zoo without docker/ builds in its root
    assert context_dir_for(bare, "", bare / "m.ubuntu.amd.Dockerfile") == bare

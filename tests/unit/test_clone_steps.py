"""A url card's clone: the credential reaches git through the environment, never the driver's text."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pytest_madengine.engine.build_args import clone_credentials
from pytest_madengine.engine.steps import clone_lines
from pytest_madengine.zoo.models import ModelSpec


def spec(tmp_path: Path, **extra: str) -> ModelSpec:
    return ModelSpec(
        name="m",
        source=tmp_path / "models.json",
        lineno=0,
        root=tmp_path,
        dockerfile="d",
        scripts="run.sh",
        url="https://git.example/org/model.git",
        extra=extra,
    )


def test_the_secret_is_in_the_environment_not_in_the_driver(tmp_path: Path) -> None:
    (tmp_path / "credential.json").write_text(json.dumps({"gh": {"username": "u", "password": "hunter2-secret"}}))
    env = clone_credentials(spec(tmp_path, cred="gh"), tmp_path / "credential.json")
    assert env == {"MAD_GIT_USERNAME": "u", "MAD_GIT_PASSWORD": "hunter2-secret"}
    driver = "\n".join(clone_lines("https://git.example/org/model.git"))
    assert "hunter2" not in driver and "$MAD_GIT_PASSWORD" in driver
    assert clone_credentials(spec(tmp_path), tmp_path / "credential.json") == {}


def test_with_a_password_git_gets_the_helper_as_one_word() -> None:
    """The driver's `set --` line gives git `-c credential.helper=...` as two words, the helper whole."""
    line = next(line for line in clone_lines("https://git.example/org/model.git") if line.startswith("if ["))
    done = subprocess.run(
        ["sh", "-c", line + "; printf '<%s>' \"$@\""],
        env={"MAD_GIT_PASSWORD": "x", "PATH": "/bin:/usr/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("<-c><credential.helper=!f() {") and done.stdout.endswith("; f>")
    unset = subprocess.run(["sh", "-c", line + "; printf '<%s>' \"$@\""], capture_output=True, text=True, check=True)
    assert unset.stdout == "<>"

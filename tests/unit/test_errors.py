"""One error base: every error of the plugin is a MadengineError, shown without a traceback, and
carries the perf.csv reason of the item it fails."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest_madengine
from pytest_madengine.engine.client import DockerUnavailable
from pytest_madengine.engine.container import ContainerStartError, DockerConnectionLost
from pytest_madengine.engine.images import ImageBuildError, PublishError
from pytest_madengine.errors import MadengineError
from pytest_madengine.report.manifest import ManifestError


def test_every_error_class_of_the_plugin_shares_the_base() -> None:
    errors = []
    for module in pkgutil.walk_packages(pytest_madengine.__path__, "pytest_madengine."):
        loaded = importlib.import_module(module.name)
        for _, cls in inspect.getmembers(loaded, inspect.isclass):
            if cls.__module__ == loaded.__name__ and issubclass(cls, BaseException):
                errors.append(cls)
    assert len(errors) >= 17
    assert [cls.__name__ for cls in errors if not issubclass(cls, MadengineError)] == []


def test_the_perf_csv_reason_of_each_error() -> None:
    build = ImageBuildError(Path("docker/m.Dockerfile"), "gfx942", "step 2 failed", "/logs/m.log", "tail line")
    assert build.reason_text() == "image build failed"
    assert DockerUnavailable("no socket").reason_text() == "docker unavailable"
    assert PublishError("denied").reason_text() == "image push failed"
    assert ManifestError("not there").reason_text() == "image not in manifest"
    assert DockerConnectionLost("gone").reason_text() == "docker connection lost"
    # Without a reason of its own: the error's type and message, as before.
    assert ContainerStartError("no such device").reason_text() == "ContainerStartError: no such device"


def test_a_build_failure_describes_itself_with_its_log() -> None:
    build = ImageBuildError(Path("docker/m.Dockerfile"), "gfx942", "step 2 failed", "/logs/m.log", "tail line")
    assert build.describe().splitlines() == [
        "image build failed for docker/m.Dockerfile (gfx942): step 2 failed",
        "build log: /logs/m.log",
        "--- last lines of the build log ---",
        "tail line",
    ]

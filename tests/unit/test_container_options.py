"""What a run's container is given beyond the card's flags: its working directory, its volumes in the
SDK's list form, and the tools' output folder where $MAD_TOOL_OUTPUT says (local.py, prepare.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_madengine.engine.executor import PreparedRun, Workspace
from pytest_madengine.engine.local import docker_options
from pytest_madengine.engine.prepare import with_extras
from pytest_madengine.engine.run_options import parse_run_options
from pytest_madengine.engine.steps import DRIVER, Extras
from pytest_madengine.gpus.lease import Lease
from pytest_madengine.zoo.context import RunContext
from pytest_madengine.zoo.data import DataChoice
from pytest_madengine.zoo.models import ModelSpec
from pytest_madengine.zoo.tools import Tool


def spec(root: Path, url: str = "") -> ModelSpec:
    (root / "scripts" / "m").mkdir(parents=True, exist_ok=True)
    return ModelSpec(
        name="m", source=root / "models.json", lineno=0, root=root, dockerfile="d", scripts="scripts/m", url=url
    )


def prepared(root: Path, card: str = "", mounts: dict[str, str] | None = None) -> PreparedRun:
    return PreparedRun(
        image="img",
        command=("bash", "run.sh"),
        environment={},
        gpus=Lease(()),
        labels={},
        workspace=Workspace(root / "scripts" / "m", root / "scripts"),
        mounts=mounts or {},
        run_options=parse_run_options(card, "models.json: model 'm'", {}),
    )


def test_a_cards_workdir_never_moves_the_model_but_a_hook_may(tmp_path: Path) -> None:
    for card in ("-w /tmp", "--workdir=/tmp", "-w/tmp", ""):
        assert docker_options(prepared(tmp_path, card))["working_dir"] == "/myworkspace/run_directory"

    def hook(options: dict[str, Any]) -> None:
        options["working_dir"] = "/elsewhere"

    run = replace(prepared(tmp_path, "-w /tmp"), customize=hook)
    assert docker_options(run)["working_dir"] == "/elsewhere"


def test_mounts_of_one_host_path_all_stay(tmp_path: Path) -> None:
    run = prepared(tmp_path, "-v /tmp:/t:ro --volume /tmp:/u", {"/ctx": "/tmp"})
    data = DataChoice("ds", "local", home="/data_dlm_0", path="/tmp")
    run = with_extras(run, spec(tmp_path), RunContext(), Extras(data=data))
    assert docker_options(run)["volumes"] == ["/tmp:/ctx:rw", "/tmp:/t:ro", "/tmp:/u:rw", "/tmp:/data_dlm_0:ro"]


def test_a_url_cards_tool_output_folder_is_made_where_mad_tool_output_points(tmp_path: Path) -> None:
    """The driver cds into the clone before the model: a relative folder would land in the clone."""
    run = with_extras(
        prepared(tmp_path), spec(tmp_path, url="/repos/model.git"), RunContext(), Extras(tools=(Tool("t"),))
    )
    output = run.environment["MAD_TOOL_OUTPUT"]
    assert output == "/myworkspace/run_directory/madengine_output"
    driver = run.workspace.extra[DRIVER]
    assert isinstance(driver, bytes)
    assert f"mkdir -p {output}" in driver.decode().splitlines()

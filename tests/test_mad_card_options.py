"""A card's run options as docker reads them, in a real container: its -w never moves the model, -e NAME
takes the host's value, attached short forms work, two volumes of one host path both stay; and a url
card's tool output comes back (the tools' folder is made where $MAD_TOOL_OUTPUT points, not in the clone).
"""

from __future__ import annotations

import json

import pytest
from zoo import Zoo, bare_repo, git_image, read_perf

GPUS = ("--madengine-arch", "gfx942", "--madengine-gpus", "0-3")

PROBE = """#!/bin/bash
mode() { grep " $1 " /proc/mounts | cut -d' ' -f4 | cut -d, -f1; }
echo "cwd: $(pwd) uid: $(id -u)"
echo "env: A=$CARD_A H=$FROM_HOST U=${NOT_ON_HOST-unset}"
echo "mounts: /a $(mode /a) /b $(mode /b)"
echo "performance: 1 probes"
"""


def test_a_cards_run_options_as_docker_reads_them(
    pytester: pytest.Pytester, zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = pytester.path / "shared"
    shared.mkdir()
    zoo.script("m/run.sh", PROBE)
    options = f"-w /tmp -uroot -eCARD_A=1 -e FROM_HOST -e NOT_ON_HOST -v{shared}:/a:ro --volume={shared}:/b"
    zoo.models([zoo.model("m", additional_docker_run_options=options)])
    monkeypatch.setenv("FROM_HOST", "host-value")
    monkeypatch.delenv("NOT_ON_HOST", raising=False)
    result = pytester.runpytest_subprocess(*GPUS, "--madengine-perf-csv", "perf.csv", "-rA", timeout=300)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "cwd: /myworkspace/run_directory uid: 0",  # -w /tmp would leave `bash run.sh` without its script
            "env: A=1 H=host-value U=unset",
            "mounts: /a ro /b rw",  # one host path twice: the read-only mount is not lost
        ]
    )
    assert read_perf(pytester.path / "perf.csv")[0]["additional_docker_run_options"] == options


FAKEPROF = {
    "tools": {
        "fakeprof": {
            "cmd": "bash ../scripts/common/fakeprof.sh",
            "post_scripts": [{"path": "scripts/common/fakeprof_post.sh"}],
        }
    }
}


def test_a_url_cards_tool_output_comes_back(pytester: pytest.Pytester, zoo: Zoo) -> None:
    git_image(zoo)
    bare_repo(pytester.path / "repos")
    zoo.script("common/fakeprof.sh", '#!/bin/bash\necho sample > "$MAD_TOOL_OUTPUT/profile.txt"\nexec "$@"\n')
    zoo.script("common/fakeprof_post.sh", '#!/bin/bash\necho "post: $(cat "$MAD_TOOL_OUTPUT/profile.txt")"\n')
    zoo.script("m/run.sh", '#!/bin/bash\necho "cwd: $(pwd)"\necho "performance: 3 clones"\n')
    mount = f"-v {pytester.path / 'repos'}:/repos:ro"
    zoo.models(
        [zoo.model("m", dockerfile="docker/withgit", url="/repos/model.git", additional_docker_run_options=mount)]
    )
    (pytester.path / "mytools.json").write_text(json.dumps(FAKEPROF))
    args = ("--madengine-tools-file", "mytools.json", "--madengine-tools", "fakeprof", "-rA")
    result = pytester.runpytest_subprocess(*GPUS, "--madengine-perf-csv", "perf.csv", *args, timeout=300)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["cwd: /myworkspace/model.git", "post: sample"])
    artifacts = pytester.path / "madengine_logs" / "m_gfx942_" / "madengine_output" / "profile.txt"
    assert artifacts.read_text() == "sample\n"

"""perf.csv: madengine's header plus reason, append-only, never rewriting a foreign file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pytest_madengine.report.perfcsv import HEADER, PerfCsvError, append_rows, check_writable

MADENGINE_V2 = (
    "model,n_gpus,nnodes,gpus_per_node,training_precision,pipeline,args,tags,docker_file,base_docker,docker_sha,"
    "docker_image,git_commit,machine_name,deployment_type,launcher,gpu_architecture,performance,metric,"
    "relative_change,status,build_duration,test_duration,dataname,data_provider_type,data_size,"
    "data_download_duration,build_number,additional_docker_run_options"
)


def test_header_is_madengine_v2_plus_reason() -> None:
    assert ",".join(HEADER) == MADENGINE_V2 + ",reason"


def test_rows_append_across_sessions(tmp_path: Path) -> None:
    path = tmp_path / "out" / "perf.csv"
    append_rows(path, [{"model": "a", "status": "SUCCESS", "args": 'x, "y"'}])
    append_rows(path, [{"model": "b", "status": "FAILURE", "reason": "exit code 1"}])
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["status"], r["reason"]) for r in rows] == [
        ("a", "SUCCESS", ""),
        ("b", "FAILURE", "exit code 1"),
    ]
    assert rows[0]["args"] == 'x, "y"'
    assert path.read_text().count("model,n_gpus") == 1


def test_foreign_header_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "perf.csv"
    original = MADENGINE_V2 + "\nold,1\n"
    path.write_text(original)
    with pytest.raises(PerfCsvError, match=r"different header \(missing reason\).*left untouched"):
        check_writable(path)
    with pytest.raises(PerfCsvError):
        append_rows(path, [{"model": "x"}])
    assert path.read_text() == original


def test_missing_trailing_newline_does_not_glue_rows(tmp_path: Path) -> None:
    path = tmp_path / "perf.csv"
    append_rows(path, [{"model": "a"}])
    path.write_text(path.read_text().rstrip("\n"))
    append_rows(path, [{"model": "b"}])
    with path.open(newline="") as handle:
        assert [r["model"] for r in csv.DictReader(handle)] == ["a", "b"]


def test_empty_file_gets_a_header(tmp_path: Path) -> None:
    path = tmp_path / "perf.csv"
    path.write_text("")
    check_writable(path)
    append_rows(path, [{"model": "a"}])
    assert path.read_text().startswith("model,n_gpus")

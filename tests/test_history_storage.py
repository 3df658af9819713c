"""The results history's storage, the same tests on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from pytest_madengine.history.records import PastValues, RunRecord, StorageError, StoredResult
from pytest_madengine.history.store import HEAD, Store


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'h' / 'history.db'}"
    base: str = request.getfixturevalue("postgres_url")
    name = f"h{uuid.uuid4().hex[:10]}"  # a database of its own per test
    admin = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return base.rsplit("/", 1)[0] + f"/{name}"


def result(run: str, model: str, value: float | None, status: str = "SUCCESS") -> StoredResult:
    return StoredResult(run, model, "gfx942", value, "samples_per_second", status, {"model": model, "x": "1"})


def test_runs_and_results_come_back_as_stored_and_history_is_oldest_first(url: str) -> None:
    from datetime import datetime, timedelta, timezone

    store = Store(url)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for index, value in enumerate([10.0, 11.0, 12.0]):
        run = f"run{index}"
        store.save(
            RunRecord(run, started=start + timedelta(hours=index), host="h", git_commit="abc"),
            [result(run, "m", value), result(run, "other", 1.0), result(run, "m2", None, "FAILURE")],
        )
    assert [r.run_id for r in store.runs()] == ["run0", "run1", "run2"]
    found = store.run("run1")
    assert found is not None and [r.model for r in found[1]] == ["m", "other", "m2"]
    assert found[1][0].row == {"model": "m", "x": "1"} and found[1][2].performance is None
    assert [r.performance for r in store.history("m", "gfx942")] == [10.0, 11.0, 12.0]
    assert [r.performance for r in store.history("m", "gfx942", last=2)] == [11.0, 12.0]
    assert store.history("m2", "gfx942") == [] and store.run("nope") is None
    store.close()
    assert len(Store(url).runs()) == 3  # a second opening finds the schema at its revision


def test_the_whole_sessions_past_values_in_one_query_match_each_models_history(url: str) -> None:
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    store = Store(url)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for index in range(7):  # runs saved out of time order: the window is by start time
        run = f"run{(index * 3) % 7}"
        on_mi300 = [replace(r, gpu_product="MI300X") for r in (result(run, "a", 100.0 + index), result(run, "b", None))]
        elsewhere = replace(result(run, "a", 1.0 * index), gpu_product="other", arch="gfx90a")
        failed = replace(result(run, "c", 5.0, "FAILURE"), gpu_product="MI300X")
        store.save(RunRecord(run, started=start + timedelta(hours=(index * 3) % 7)), [*on_mi300, elsewhere, failed])
    for product, last in (("MI300X", 5), ("MI300X", 0), (None, 3), ("other", 2)):
        past = store.past_values(product, last)
        for model, arch in (("a", "gfx942"), ("a", "gfx90a"), ("b", "gfx942"), ("c", "gfx942")):
            expected = [r.performance for r in store.history(model, arch, product, last)]
            assert past.of(model, arch) == expected, (product, last, model, arch)
        assert PastValues.from_json(past.to_json()) == past
    assert store.past_values("MI300X", 2).of("a", "gfx942") == [104.0, 102.0]  # the runs started last, oldest first
    assert store.past_values(None, 0, run="run3").of("a", "gfx942") == [101.0]  # index 1 saved run3
    assert store.past_values(None, 0, run="run3").of("c", "gfx942") == []  # FAILURE is not a value


WRITER = """
import sys
from pytest_madengine.history.records import RunRecord, StoredResult
from pytest_madengine.history.store import Store
store = Store(sys.argv[1])
for i in range(20):
    run = f"{sys.argv[2]}-{i}"
    store.save(RunRecord(run), [StoredResult(run, "m", "gfx942", float(i), "x", "SUCCESS", {}) for _ in range(5)])
"""


def test_two_sessions_writing_at_once_lose_nothing(url: str) -> None:
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, name]) for name in ("a", "b")]
    try:
        codes = [w.wait(timeout=120) for w in writers]
    finally:
        for w in writers:
            w.kill()
    assert codes == [0, 0]
    store = Store(url)
    assert len(store.runs()) == 40 and len(store.history("m", "gfx942")) == 200


def test_a_bad_url_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(StorageError) as failed:
        Store("postgresql://user:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(failed.value) and "127.0.0.1" in str(failed.value)


def test_head_is_alembics_newest_revision() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pytest_madengine.history.store import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_a_session_without_history_loads_no_database_library() -> None:
    check = "import sys, pytest_madengine.plugin; print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')))"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

"""The history's storage: one schema in SQLite or PostgreSQL, created and migrated by Alembic when
a store is opened, read and written through SQLAlchemy Core."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import sqlalchemy as sa
from filelock import FileLock

from .records import PastValues, RunRecord, StorageError, StoredResult
from .schema import results, runs

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0001"  # the newest revision under migrations/versions (a test checks it is Alembic's head)


class Store:
    """One database. Opening it brings its schema to the newest revision, once even when several
    sessions open it at the same time (a file lock beside a SQLite file, an advisory lock in PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith(("postgresql://", "postgres://")):  # psycopg 3, not SQLAlchemy's default psycopg2
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        try:
            self.engine = sa.create_engine(url, future=True)
            if self.engine.dialect.name == "sqlite" and self.engine.url.database:
                Path(self.engine.url.database).parent.mkdir(parents=True, exist_ok=True)
            self._migrate()
        except (sa.exc.SQLAlchemyError, OSError, ImportError) as exc:
            raise StorageError(f"history storage {_safe(url)}: {exc}") from None

    def _migrate(self) -> None:
        """Alembic brings the schema to HEAD; a database already there is not touched (and Alembic,
        slow to import, is not loaded)."""
        if self._revision() == HEAD:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        if self.engine.dialect.name == "sqlite":
            lock = FileLock(f"{self.engine.url.database or 'memory'}.migrate.lock")
            with lock, self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
            return
        with self.engine.begin() as connection:
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(4242)"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def _revision(self) -> str:
        try:
            with self.engine.connect() as connection:
                return str(connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() or "")
        except sa.exc.SQLAlchemyError:
            return ""

    @contextlib.contextmanager
    def _speaking(self, what: str) -> Iterator[None]:
        """A database error as a StorageError naming the store (without its password) and the step."""
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"history storage {_safe(self.url)}: {what}: {exc}") from None

    def save(self, run: RunRecord, stored: Sequence[StoredResult]) -> None:
        """One run and its results, in one transaction (a crash stores all of it or nothing)."""
        with self._speaking(f"storing run {run.run_id}"), self.engine.begin() as connection:
            connection.execute(runs.insert().values(**run.__dict__))
            if stored:
                connection.execute(
                    results.insert(),
                    [
                        {
                            "run_id": run.run_id,
                            "seq": index,
                            "model": r.model,
                            "arch": r.arch,
                            "gpu_product": r.gpu_product,
                            "performance": r.performance,
                            "metric": r.metric,
                            "status": r.status,
                            "image_digest": r.image_digest,
                            "row": dict(r.row),
                        }
                        for index, r in enumerate(stored)
                    ],
                )

    def runs(self) -> list[RunRecord]:
        with self.engine.connect() as connection:
            found = connection.execute(sa.select(runs).order_by(runs.c.started, runs.c.run_id))
            return [RunRecord(**row._mapping) for row in found]

    def run(self, run_id: str) -> tuple[RunRecord, list[StoredResult]] | None:
        with self.engine.connect() as connection:
            head = connection.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
            if head is None:
                return None
            rows = connection.execute(sa.select(results).where(results.c.run_id == run_id).order_by(results.c.seq))
            return RunRecord(**head._mapping), [_result(r._mapping) for r in rows]

    def history(self, model: str, arch: str, gpu_product: str | None = None, last: int = 0) -> list[StoredResult]:
        """SUCCESS results with a number for one model and arch (and GPU product, when given), oldest first;
        the `last` newest only when it is set."""
        query = (
            sa.select(results)
            .join(runs, runs.c.run_id == results.c.run_id)
            .where(results.c.model == model, results.c.arch == arch, results.c.status == "SUCCESS")
            .where(results.c.performance.is_not(None))
            .order_by(runs.c.started.desc(), runs.c.run_id.desc(), results.c.seq.desc())
        )
        if gpu_product is not None:
            query = query.where(results.c.gpu_product == gpu_product)
        if last:
            query = query.limit(last)
        with self.engine.connect() as connection:
            found = [_result(r._mapping) for r in connection.execute(query)]
        return found[::-1]

    def past_values(self, gpu_product: str | None, last: int, run: str = "") -> PastValues:
        """For the noise gate, in one query: the results of `run` when named, else each model and
        arch's `last` newest SUCCESS results with a number (on `gpu_product`, when given)."""
        if run:
            with self._speaking(f"reading run {run}"):
                found = self.run(run)
            return PastValues.of_results(found[1] if found else [])
        newest_first = (runs.c.started.desc(), runs.c.run_id.desc(), results.c.seq.desc())
        rank = sa.func.row_number().over(partition_by=(results.c.model, results.c.arch), order_by=newest_first)
        inner = (
            sa.select(results.c.model, results.c.arch, results.c.performance, rank.label("rank"))
            .join(runs, runs.c.run_id == results.c.run_id)
            .where(results.c.status == "SUCCESS", results.c.performance.is_not(None))
        )
        if gpu_product is not None:
            inner = inner.where(results.c.gpu_product == gpu_product)
        ranked = inner.subquery()
        query = sa.select(ranked.c.model, ranked.c.arch, ranked.c.performance).order_by(
            ranked.c.model, ranked.c.arch, ranked.c.rank.desc()
        )
        if last:
            query = query.where(ranked.c.rank <= last)
        with self._speaking("reading the history"), self.engine.connect() as connection:
            return PastValues.grouped((model, arch, value) for model, arch, value in connection.execute(query))

    def close(self) -> None:
        self.engine.dispose()


def _result(row: sa.RowMapping) -> StoredResult:
    return StoredResult(
        run_id=row["run_id"],
        model=row["model"],
        arch=row["arch"],
        performance=row["performance"],
        metric=row["metric"],
        status=row["status"],
        row=row["row"] or {},
        gpu_product=row["gpu_product"],
        image_digest=row["image_digest"],
    )


def _safe(url: str) -> str:
    """The URL without its password."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"

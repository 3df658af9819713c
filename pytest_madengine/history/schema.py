"""The history's tables (SQLAlchemy Core). Alembic's revisions under `migrations/` create and change
them; this is what the code reads and writes."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("started", DateTime(timezone=True)),
    Column("ended", DateTime(timezone=True)),
    Column("git_commit", String(64), nullable=False, default=""),
    Column("git_dirty", Boolean, nullable=True),
    Column("host", String(255), nullable=False, default=""),
    Column("gpu_product", String(255), nullable=False, default=""),
    Column("driver", String(255), nullable=False, default=""),
    Column("runtime_version", String(255), nullable=False, default=""),  # ROCm / CUDA
    Column("plugin_version", String(32), nullable=False, default=""),
    Column("pytest_args", Text, nullable=False, default=""),
    Column("source", String(255), nullable=False, default="session"),  # or the perf.csv it was imported from
)

results = Table(
    "results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),  # order within its run
    Column("model", String(255), nullable=False),
    Column("arch", String(255), nullable=False, default=""),
    Column("gpu_product", String(255), nullable=False, default=""),
    Column("performance", Float, nullable=True),  # None: not a number
    Column("metric", String(255), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("image_digest", String(255), nullable=False, default=""),
    Column("row", JSON, nullable=False),  # the whole perf.csv row, extras included
    Index("ix_results_model_arch", "model", "arch"),
    Index("ix_results_run", "run_id"),
)

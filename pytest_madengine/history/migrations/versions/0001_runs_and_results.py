"""runs and results

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("started", sa.DateTime(timezone=True)),
        sa.Column("ended", sa.DateTime(timezone=True)),
        sa.Column("git_commit", sa.String(64), nullable=False),
        sa.Column("git_dirty", sa.Boolean, nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("gpu_product", sa.String(255), nullable=False),
        sa.Column("driver", sa.String(255), nullable=False),
        sa.Column("runtime_version", sa.String(255), nullable=False),
        sa.Column("plugin_version", sa.String(32), nullable=False),
        sa.Column("pytest_args", sa.Text, nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("arch", sa.String(255), nullable=False),
        sa.Column("gpu_product", sa.String(255), nullable=False),
        sa.Column("performance", sa.Float, nullable=True),
        sa.Column("metric", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("image_digest", sa.String(255), nullable=False),
        sa.Column("row", sa.JSON, nullable=False),
    )
    op.create_index("ix_results_model_arch", "results", ["model", "arch"])
    op.create_index("ix_results_run", "results", ["run_id"])


def downgrade() -> None:
    op.drop_table("results")
    op.drop_table("runs")

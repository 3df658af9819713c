"""Alembic's environment: the connection comes from `store.migrate` (config.attributes)."""

from __future__ import annotations

from alembic import context

from pytest_madengine.history.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()

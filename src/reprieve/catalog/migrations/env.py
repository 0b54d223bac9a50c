"""Alembic's environment: run migrations on the connection the catalog hands over."""

from __future__ import annotations

from alembic import context

from reprieve.catalog.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: migrates the engine handed over by `orchestrator.store.migrate`."""

from __future__ import annotations

from alembic import context

from orchestrator.store.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        )
        context.run_migrations()


run_migrations_online()

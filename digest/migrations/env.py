"""Alembic's entry point: migrate the engine the caller passed in, against the SQLModel metadata."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import digest.db.tables  # noqa: F401 - registers the tables on SQLModel.metadata

target_metadata = SQLModel.metadata


def run() -> None:
    engine = context.config.attributes.get("engine")
    if engine is None:
        raise RuntimeError(
            "digest's migrations run through digest.migrations (or `digest migrate`), which pass the engine"
        )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        )
        with context.begin_transaction():
            context.run_migrations()


run()

"""Database migrations (Alembic): the schema's history, applied by `digest migrate` or the Store.

The revisions live in `versions/`; `env.py` compares against the SQLModel metadata, so a new
table or column gets its revision with `digest migrate --autogenerate "what changed"`.  No
alembic.ini is needed: the configuration is built here from the database URL.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
FIRST = "0001"  # the schema as it was before migrations existed (create_all)


def config(engine: Engine | None = None) -> Config:
    """An Alembic configuration for our scripts; with `engine`, env.py migrates that database."""
    cfg = Config()
    cfg.set_main_option("script_location", HERE.as_posix())
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", (HERE / "versions").as_posix())
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


@lru_cache(maxsize=1)
def head() -> str:
    """The newest revision the code knows."""
    rev = ScriptDirectory.from_config(config()).get_current_head()
    assert rev is not None
    return rev


def current(connection: Connection) -> str | None:
    """The revision a database is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def has_tables(connection: Connection) -> bool:
    return bool(inspect(connection).get_table_names())


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(config(engine), revision)


def stamp(engine: Engine, revision: str) -> None:
    command.stamp(config(engine), revision)


def autogenerate(engine: Engine, message: str) -> str:
    """Write a new revision for whatever the metadata has that the database (at head) lacks."""
    script = command.revision(config(engine), message=message, autogenerate=True)
    return str(getattr(script, "path", script))


def differences(connection: Connection, metadata: MetaData) -> list[Any]:
    """What the database lacks or has beyond `metadata` (the tables' SQLModel.metadata; empty when they agree)."""
    return list(compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata))

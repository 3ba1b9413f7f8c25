"""Which revision of the schema a database holds, and bringing it to the newest (head).

An empty database is created at head from the live tables and stamped (what keeps
`opus serve` a one-command start). Any other database changes only through
`opus db upgrade`, never as a side effect of starting a process: the operator chooses the
moment (after a backup), and servers and workers starting together must not race to
alter tables. The revisions live in the Alembic script directory `migrations/`,
installed as the package data `opus.migrations`.

Alembic takes a third of a second to import: only the processes that check the schema
import this module (`Database.create_schema` imports it when called).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from opus.store.schema import Base
from provenance.store import metadata as provenance_tables

if TYPE_CHECKING:
    from opus.store.db import Database

SCRIPTS = Path(str(resources.files("opus.migrations")))
# The revision of a database made by create_all before migrations existed (it has the
# tables but no alembic_version).
LEGACY = "0001"
# PostgreSQL advisory lock held while the schema is checked, created or upgraded.
SCHEMA_LOCK = 0x0B05_5C4E


class SchemaError(Exception):
    """The database holds a revision of the schema other than the one this code needs."""


class SchemaOutdated(SchemaError):
    """An older revision: `opus db upgrade` brings it to head."""


class SchemaUnknown(SchemaError):
    """A revision this code does not know: a newer OPUS made or upgraded the database."""


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """The Alembic configuration of OPUS (no alembic.ini): its revisions, and the
    database as an open connection (run in its transaction) or a URL."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision."""
    newest = _scripts().get_current_head()
    if newest is None:
        raise RuntimeError(f"no revision in {SCRIPTS}")
    return newest


def current(conn: Connection) -> str | None:
    """The database's revision: LEGACY for tables made before migrations; None if empty."""
    revision = MigrationContext.configure(conn).get_current_revision()
    if revision is None and inspect(conn).has_table("jobs"):
        return LEGACY
    return revision


def ensure_current(db: Database) -> None:
    """Create an empty database at head; accept one at head; refuse any other.

    Raises:
        SchemaOutdated: an older revision, which `opus db upgrade` brings to head.
        SchemaUnknown: a revision newer than this code.
    """
    with _holding_schema(db) as conn:
        found = current(conn)
        if found is None:
            _create(conn)
        elif found != head():
            raise _mismatch(found)


def upgrade(db: Database) -> tuple[str | None, str]:
    """Bring the database to head, whatever it holds (empty, made before migrations, or
    at an older revision), in one transaction.

    Returns:
        The revision found (None: empty) and the one now held.

    Raises:
        SchemaUnknown: a revision newer than this code.
    """
    newest = head()
    with _holding_schema(db) as conn:
        found = current(conn)
        if found is None:
            _create(conn)
        elif found != newest:
            if not _known(found):
                raise _mismatch(found)
            context = MigrationContext.configure(conn)
            if context.get_current_revision() is None:
                context.stamp(_scripts(), LEGACY)
            command.upgrade(alembic_config(conn), newest)
    return found, newest


@contextmanager
def _holding_schema(db: Database) -> Iterator[Connection]:
    """A write transaction that no other process checking the schema runs beside: of
    servers and workers started together on an empty database, one creates it and the
    others find it made (SQLite's BEGIN IMMEDIATE serialises them already)."""
    with db.write() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        yield conn


def _create(conn: Connection) -> None:
    Base.metadata.create_all(conn)
    provenance_tables.create_all(conn)
    MigrationContext.configure(conn).stamp(_scripts(), head())


def _known(revision: str) -> bool:
    return any(script.revision == revision for script in _scripts().walk_revisions())


def _mismatch(found: str) -> SchemaError:
    newest = head()
    if not _known(found):
        return SchemaUnknown(
            f"the database schema is at revision {found}, which this version of OPUS does "
            f"not know (it needs {newest}): the database was made or upgraded by a newer OPUS"
        )
    return SchemaOutdated(
        f"the database schema is at revision {found} and this version of OPUS needs "
        f"{newest}: back up the database, then run `opus db upgrade`"
    )

"""The Alembic environment of the OPUS database.

`opus.store.migrate` hands in its connection, inside the transaction it opened, as
``config.attributes["connection"]``: the revisions run in that transaction and its caller
commits. Without one (Alembic driven by hand), the main option ``sqlalchemy.url`` names the
database, and offline mode (``--sql``) writes the SQL instead of running it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, MetaData, create_engine

from opus.store.schema import Base
from provenance.store import metadata as provenance_tables

# What `alembic revision --autogenerate` compares a database with, to draft the next
# revision; the revisions themselves never import these tables.
TARGET: list[MetaData] = [Base.metadata, provenance_tables]


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=TARGET,
        # SQLite alters a table by copying it: drafts use batch operations there
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=TARGET, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    if not url:
        raise RuntimeError(
            'give the connection as config.attributes["connection"] or set sqlalchemy.url'
        )
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            run(connection)
    finally:
        engine.dispose()


main()

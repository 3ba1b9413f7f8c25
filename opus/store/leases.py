"""Leases: a named right held by one process at a time while it renews it.

A lease row names its holder and when it lapses. Taking it is one conditional update
(ours already, or lapsed) or, for a name never held, an insert that yields to a
concurrent one: on SQLite and PostgreSQL alike, two processes never both hold it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Table, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from opus.store import schema

leases: Table = schema.leases  # type: ignore[assignment]


def hold(conn: Connection, name: str, holder: str, now: datetime, seconds: float) -> bool:
    """Take or renew the lease `name` for `seconds`; False if another holds it."""
    expires = now + timedelta(seconds=seconds)
    renewed = conn.execute(
        update(leases)
        .where(leases.c.name == name, or_(leases.c.holder == holder, leases.c.expires < now))
        .values(holder=holder, expires=expires)
    )
    if renewed.rowcount:
        return True
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    taken = conn.execute(
        dialect.insert(leases)
        .values(name=name, holder=holder, expires=expires)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return bool(taken.rowcount)


def release(conn: Connection, name: str, holder: str) -> None:
    """Give the lease up at once (a clean stop), if we hold it."""
    conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))


def holder_of(conn: Connection, name: str, now: datetime) -> str | None:
    """Who holds the lease now (None: nobody, or it lapsed)."""
    row = conn.execute(
        select(leases.c.holder).where(leases.c.name == name, leases.c.expires >= now)
    ).first()
    return None if row is None else str(row[0])

"""Engine creation and transactions.

SQLite: WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for write transactions so
that concurrent writers (web workers and job runners) queue on the lock
instead of failing when a read transaction tries to upgrade to a write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError

# Connections a process keeps (and as many more at peaks) on a database server. A web
# worker serves many requests at once (gevent); a job runner one job, with a transaction
# and a phase read at most. PostgreSQL's max_connections (100 by default) must cover
# 2 x (WEB_POOL x web workers + RUNNER_POOL x job processes), plus the beat and CLI.
WEB_POOL = 10
RUNNER_POOL = 2


class Database:
    def __init__(self, url: str, pool_size: int = RUNNER_POOL) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = self._create_engine(url, pool_size)

    def _create_engine(self, url: str, pool_size: int) -> Engine:
        if not self.is_sqlite:
            engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
            _ping_when_idle(engine)
            return engine
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let us emit BEGIN ourselves (pysqlite's own handling defers it).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def create_schema(self) -> None:
        """Create the tables of an empty database, at the newest revision; a database at
        another revision raises `opus.store.migrate.SchemaError` (`opus db upgrade`)."""
        from opus.store.migrate import ensure_current  # imports Alembic: only when asked

        ensure_current(self)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """A connection whose statements commit one by one (PostgreSQL's autocommit: no BEGIN
        and COMMIT round trips), for a write that is one statement and reads that it cannot
        race; on SQLite, one write transaction."""
        if self.is_sqlite:
            with self.write() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

    def prepare(self, statement: Select[Any]) -> Prepared:
        return Prepared(self.engine, statement)


PING_AFTER_IDLE = 1.0  # seconds


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use if it sat idle: a server restarted meanwhile
    costs a reconnect, not a failed request. SQLAlchemy's pool_pre_ping checks every
    checkout, a round trip that is a tenth of a job runner's database time; a connection
    used a moment ago is alive."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError() from exc  # the pool connects afresh and tries again


class Prepared:
    """A SELECT compiled once and run on a pooled DBAPI connection, for the hottest reads
    (a job's phase): about 20 us a call here against 230 us through a Connection.

    Rows come back as the driver gives them, without SQLAlchemy's type processing:
    use it for text and numbers, not for dates.
    """

    def __init__(self, engine: Engine, statement: Select[Any]) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.engine = engine
        self.sql = str(compiled)
        self.positions = list(compiled.positiontup or [])

    def first(self, **params: Any) -> tuple[Any, ...] | None:
        args: Any = [params[name] for name in self.positions] if self.positions else params
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            raw = self.engine.raw_connection()
        except dbapi_error as exc:  # as SQLAlchemy's own statements raise it
            raise DBAPIError.instance(self.sql, args, exc, dbapi_error) from exc
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(self.sql, args)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except dbapi_error as exc:
            raw.invalidate()  # not back into the pool: the connection may be broken
            raise DBAPIError.instance(self.sql, args, exc, dbapi_error) from exc
        finally:
            raw.close()  # back to the pool, which rolls back whatever the read began
        return tuple(row) if row is not None else None

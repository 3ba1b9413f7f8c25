"""Queries written by users (ADQL translated to SQL) on connections that cannot write.

SQLite: a connection opened with ``mode=ro`` and a progress handler that interrupts the
statement past its deadline. PostgreSQL: a READ ONLY transaction with a
``statement_timeout``. Either way the statement runs as text, as the translator wrote it
(values are literals in it, never bound): the driver must not read ``%`` as a placeholder,
so it goes to the DBAPI cursor without parameters.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from opus.store.db import Database

# Users' queries a process runs at once (more wait for a connection): each web worker
# keeps its connections for jobs (opus.store.db.WEB_POOL) apart from these.
QUERY_POOL = 4
# SQLite calls the progress handler every this many virtual machine instructions.
PROGRESS_STEPS = 20_000


Rows = tuple[list[str], list[tuple[Any, ...]]]  # column names, rows


WORK_MEM = "64kB"


class QueryTimeout(Exception):
    """The query ran past its time limit and was stopped."""


class QueryFailed(Exception):
    """The database refused or failed the query (its message says why)."""


class ReadOnlyQueries:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.is_sqlite = db.is_sqlite
        if db.is_sqlite:
            path = make_url(db.url).database
            self.engine = create_engine(
                "sqlite://",
                creator=lambda: _sqlite_read_only(str(path)),
                poolclass=QueuePool,
                pool_size=QUERY_POOL,
                max_overflow=0,
            )
        else:  # a pool of its own: long queries never take the connections jobs need
            self.engine = create_engine(db.url, pool_size=QUERY_POOL, max_overflow=0)

    def run(
        self, sql: str, timeout: float, max_rows: int
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The column names and at most `max_rows` rows of one SELECT, within `timeout` s."""
        raw = self.engine.raw_connection()  # the pool's locks are the greenlets' (gevent)
        try:
            if self.is_sqlite:
                found: Rows = _off_the_hub(self._sqlite, raw, sql, timeout, max_rows)
                return found
            rows: Rows = self._postgres(raw, sql, timeout, max_rows)
            return rows
        finally:
            raw.close()

    @staticmethod
    def _sqlite(raw: Any, sql: str, timeout: float, max_rows: int) -> Any:
        import sqlite3

        deadline = time.monotonic() + timeout
        driver = raw.driver_connection
        driver.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
        cursor = driver.cursor()
        try:
            cursor.execute(sql)
            rows = cursor.fetchmany(max_rows)
            names = [d[0] for d in cursor.description or []]
        except sqlite3.OperationalError as exc:
            if time.monotonic() > deadline:
                raise QueryTimeout() from None
            raise QueryFailed(str(exc)) from None
        except sqlite3.Error as exc:
            raise QueryFailed(str(exc)) from None
        finally:
            cursor.close()
            driver.set_progress_handler(None, PROGRESS_STEPS)
        return names, rows

    @staticmethod
    def _postgres(raw: Any, sql: str, timeout: float, max_rows: int) -> Any:
        import psycopg

        cursor = raw.cursor()
        try:
            # psycopg has begun the transaction: these are its first statements
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
            # PostgreSQL makes an EXISTS inside an OR (the visibility rule in every view) a
            # hashed subplan when its rows fit in work_mem: it then reads every job of the
            # reader first, planning for the whole table, not for the rows a TOP or the
            # lineage reaches (TOP 100 entities as an owner of 50,000 jobs: 560 ms). With
            # little work_mem each row is checked by index lookups (11 ms); a large sort
            # spills to disk instead.
            cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
            cursor.execute(sql)
            rows = cursor.fetchmany(max_rows)
            names = [d[0] for d in cursor.description or []]
        except psycopg.errors.QueryCanceled:
            raise QueryTimeout() from None
        except psycopg.Error as exc:
            raise QueryFailed(str(exc).split("\n", 1)[0]) from None
        finally:
            try:
                raw.rollback()
            finally:
                cursor.close()
        return names, rows


def _off_the_hub(function: Any, *args: Any) -> Any:
    """Run a SQLite query in a thread of its own under gevent (as `opus serve` runs):
    SQLite does not yield to the other requests of the worker while it steps, psycopg
    does. Elsewhere (a job runner, the CLI), here."""
    gevent = sys.modules.get("gevent.monkey")
    if gevent is None or not gevent.is_module_patched("threading"):
        return function(*args)
    hub = sys.modules["gevent"].get_hub()
    return hub.threadpool.apply(function, args)


def _sqlite_read_only(path: str) -> Any:
    import sqlite3

    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
    connection.isolation_level = None
    connection.execute("PRAGMA query_only=ON")
    return connection

"""What a benchmark's processes cost while it measures: CPU seconds read from /proc, and the
counters of PostgreSQL (pg_stat_database, pg_stat_user_tables, pg_stat_statements when the
server loads it) and of Redis (INFO commandstats), each as a difference over a phase.

`Sampler` reads /proc/<pid>/stat (utime + stime: the process's own CPU; cutime + cstime: that
of its children it has waited for, such as a runner's job processes) of the processes that
a `Selector` picks from the process table, every `interval` seconds in a thread, so that a
process that starts during the phase (a new PostgreSQL backend) is counted too; one that
ends between two samples loses what it spent since the last one (`Usage.gone` says how many).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import sqlalchemy

TICK = float(os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    own: float  # seconds: utime + stime
    reaped: float  # seconds: cutime + cstime (children waited for)
    cmdline: str


def read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:  # gone, or not ours to read
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    own = (int(fields[11]) + int(fields[12])) / TICK
    reaped = (int(fields[13]) + int(fields[14])) / TICK
    return Proc(pid, int(fields[1]), own, reaped, cmdline)


def process_table() -> dict[int, Proc]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = read_proc(int(name))
            if proc is not None:
                table[proc.pid] = proc
    return table


def children(table: dict[int, Proc], pid: int) -> list[Proc]:
    return [p for p in table.values() if p.ppid == pid]


# A Selector names, from the process table, the processes to count: pid -> (the category of
# its own CPU, the category of its reaped children's or None to leave them out).
Selector = Callable[[dict[int, Proc]], dict[int, tuple[str, str | None]]]


def machine_busy() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # without guest time, already counted in user
    return (total - idle) / TICK, total / TICK


def own_cpu() -> float:
    """This process's CPU seconds (the benchmark's clients and its sampler)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


@dataclass
class Usage:
    seconds: dict[str, float]  # CPU seconds by category
    processes: dict[str, int]  # processes seen by category
    gone: int  # processes that ended during the phase (their last moments are missed)
    wall: float
    machine_busy: float  # CPU seconds of the whole machine (every core) meanwhile
    machine_capacity: float  # CPU seconds the machine had meanwhile (cores x wall)
    client: float  # CPU seconds of this process


@dataclass
class Sampler:
    select: Selector
    interval: float = 0.25
    _first: dict[int, tuple[float, float]] = field(default_factory=dict)
    _last: dict[int, tuple[float, float]] = field(default_factory=dict)
    _kinds: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    _started: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> set[int]:
        table = process_table()
        chosen = self.select(table)
        for pid, kinds in chosen.items():
            proc = table[pid]
            now = (proc.own, proc.reaped)
            if pid not in self._first:
                # present at the start: counted from here; new since: counted whole
                self._first[pid] = now if not self._started else (0.0, 0.0)
            self._last[pid] = now
            self._kinds[pid] = kinds
        return set(chosen)

    def start(self) -> None:
        self._wall = time.monotonic()
        self._machine = machine_busy()
        self._client = own_cpu()
        self._sample()
        self._started = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        alive = self._sample()
        wall = time.monotonic() - self._wall
        busy, total = machine_busy()
        seconds: dict[str, float] = {}
        processes: dict[str, int] = {}
        for pid, (own, reaped) in self._last.items():
            first_own, first_reaped = self._first[pid]
            kind, reaped_kind = self._kinds[pid]
            seconds[kind] = seconds.get(kind, 0.0) + own - first_own
            processes[kind] = processes.get(kind, 0) + 1
            if reaped_kind is not None:
                seconds[reaped_kind] = seconds.get(reaped_kind, 0.0) + reaped - first_reaped
        return Usage(
            seconds=seconds,
            processes=processes,
            gone=len(set(self._last) - alive),
            wall=wall,
            machine_busy=busy - self._machine[0],
            machine_capacity=total - self._machine[1],
            client=own_cpu() - self._client,
        )


# -- PostgreSQL ---------------------------------------------------------------------------

DATABASE_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "sessions",
    "active_time",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "blks_hit",
    "blks_read",
)
TABLE_COUNTERS = ("seq_scan", "idx_scan", "n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del")
# pg_stat_database's counters of an idle backend reach the view within 10 s
# (PGSTAT_IDLE_INTERVAL), those of a busy one within 1 s, those of one that exits at once.
STATS_SETTLE = 11.0


def postmaster_pid(admin: sqlalchemy.Engine) -> int | None:
    """The PostgreSQL server's main process, if it runs on this machine."""
    with admin.connect() as conn:
        backend = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        proc = read_proc(backend)
    return proc.ppid if proc is not None and proc.cmdline.startswith("postgres") else None


def backend_pids(engine: sqlalchemy.Engine) -> set[int]:
    """The backends of an engine's pooled connections (the benchmark's own, left out)."""
    with engine.connect() as conn:
        return {int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())}


def postgres_selector(postmaster: int | None, database: str, exclude: set[int]) -> Selector:
    """The backends of `database` (autovacuum's workers on it too) as "postgres", the
    server's own processes (WAL writer, checkpointer...: shared with every database) as
    "postgres_aux"."""
    aux = (
        "walwriter",
        "checkpointer",
        "background writer",
        "autovacuum launcher",
        "logical replication launcher",
    )

    def select(table: dict[int, Proc]) -> dict[int, tuple[str, str | None]]:
        if postmaster is None:
            return {}
        chosen: dict[int, tuple[str, str | None]] = {}
        for proc in children(table, postmaster):
            words = proc.cmdline.split()
            if proc.pid in exclude:
                continue
            if database in words:
                chosen[proc.pid] = ("postgres", None)
            elif any(proc.cmdline.endswith(name) for name in aux):
                chosen[proc.pid] = ("postgres_aux", None)
        return chosen

    return select


def database_counters(admin: sqlalchemy.Engine, database: str) -> dict[str, float]:
    columns = ", ".join(DATABASE_COUNTERS)
    with admin.connect() as conn:
        row = conn.exec_driver_sql(
            f"SELECT {columns} FROM pg_stat_database WHERE datname = %(db)s", {"db": database}
        ).one()
    return {name: float(value or 0) for name, value in zip(DATABASE_COUNTERS, row, strict=True)}


def table_counters(engine: sqlalchemy.Engine) -> dict[str, dict[str, float]]:
    columns = ", ".join(TABLE_COUNTERS)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT relname, {columns} FROM pg_stat_user_tables").all()
    return {
        row[0]: {n: float(v or 0) for n, v in zip(TABLE_COUNTERS, row[1:], strict=True)}
        for row in rows
    }


def statements_available(engine: sqlalchemy.Engine) -> bool:
    """Whether the server loads pg_stat_statements (shared_preload_libraries); if so, its
    view is made in the benchmark's own database."""
    with engine.connect() as conn:
        libraries = str(conn.exec_driver_sql("SHOW shared_preload_libraries").scalar_one())
        if "pg_stat_statements" not in libraries:
            return False
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.commit()
    return True


def statement_counters(engine: sqlalchemy.Engine) -> dict[str, float]:
    """Statements run in the engine's database, by kind (transaction control apart), but
    those of this benchmark's own reads of pg_stat_statements."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT query, sum(calls) FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND query NOT LIKE '%%pg_stat_%%' GROUP BY query"
        ).all()
    counts: dict[str, float] = {}
    for query, calls in rows:
        verb = str(query).split(None, 1)[0].upper() if str(query).strip() else "?"
        counts[verb] = counts.get(verb, 0.0) + float(calls)
    return counts


# -- Redis --------------------------------------------------------------------------------


def redis_counters(client: redis.Redis) -> dict[str, float]:
    """Redis's calls by command, and its connections received ("connections")."""
    stats: dict[str, Any] = client.info("commandstats")
    counts = {
        name.removeprefix("cmdstat_"): float(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }
    counts["connections"] = float(client.info("stats")["total_connections_received"])
    return counts


def difference(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}


def redis_pid(client: redis.Redis) -> int | None:
    """The Redis server's process, if it runs on this machine."""
    pid = int(client.info("server")["process_id"])
    proc = read_proc(pid)
    return pid if proc is not None and "redis" in proc.cmdline else None

"""Jobs through Celery + Redis + PostgreSQL, against the embedded executor on the same
PostgreSQL and machine, in one run: one JSON object on stdout.

    python benchmarks/celery_bench.py [--quick] [--jobs 1000] [--workers 2] [--rounds 1]
        [--only celery|embedded] [--max-active 0] [--profile DIR]

Runs two clusters on this machine, one after the other, each on a fresh PostgreSQL
database (OPUS_BENCH_POSTGRES, the server's admin URL):

- celery: `opus serve` (gunicorn, 2 gevent workers) with OPUS_BROKER_URL on Redis, and
  `--workers` Celery worker processes (`opus worker --concurrency 1` each; the sweeps run
  in whichever OPUS process holds their lease). Redis is a redis-server of this benchmark's
  own on a free port (its CPU and commands are then the cluster's alone) when one is
  installed and OPUS_BENCH_REDIS is not set; else OPUS_BENCH_REDIS (database 9 of the local
  Redis by default, emptied);
- embedded: `opus serve` without a broker, OPUS_EXECUTOR_PROCESSES=`--workers`: the
  reference.

On each it measures:

1. dispatch_ms: QUEUED -> EXECUTING (creationTime of a job created with PHASE=RUN to its
   startTime), one job at a time on an idle cluster;
2. completed_per_s: `--jobs` hello jobs created with PHASE=RUN by 8 client threads, from
   the first POST to the last COMPLETED (read in the database);
3. per_job, over phase 2: CPU milliseconds of the web workers (gunicorn's processes), of
   the Celery workers (or the executor and its runners), of the jobs' own processes, of
   PostgreSQL's backends of the database and of Redis (/proc/<pid>/stat, sampled every
   0.25 s); PostgreSQL's transactions, sessions and rows (pg_stat_database,
   pg_stat_user_tables; rows returned and fetched include the sweeps' scans and this
   benchmark's probe for the end, one index lookup every 20 ms), its statements
   (pg_stat_statements, if the server loads it: else null) and Redis's commands (INFO
   commandstats). Also what the benchmark's own clients,
   PostgreSQL's shared processes and the rest of the machine (other work: `loaded`) used,
   and `cpu_bound_per_s`, the jobs a second the cores would run if the cluster had them to
   itself and were bound by CPU: on a shared machine, the figure that moves least.

`--rounds N` measures the clusters in turn N times (each first in turn) and keeps each
one's best round (`rounds` lists them all). `--max-active` is OPUS_MAX_ACTIVE_JOBS: 0 (no
limit) by default, since the limit's count of the caller's active jobs scans a backlog that
grows here to hundreds of jobs (and at 100, the default, POSTs are refused). `--profile DIR`
records each OPUS process with py-spy during phase 2 (its figures are then not to be
compared). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests, opus

import redis
import sqlalchemy
from costs import (
    STATS_SETTLE,
    Proc,
    Sampler,
    Selector,
    Usage,
    backend_pids,
    children,
    database_counters,
    difference,
    loadavg,
    postgres_selector,
    postmaster_pid,
    process_table,
    redis_counters,
    redis_pid,
    statement_counters,
    statements_available,
    table_counters,
)
from uws_bench import FORM, Client, log, machine, summary

from tests.servers import ROOT, Server, free_port, launch

PG_ADMIN = os.environ.get("OPUS_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1/postgres")
REDIS = os.environ.get("OPUS_BENCH_REDIS", "")
SHARED_REDIS = "redis://127.0.0.1:6379/9"
DATABASE = "opus_celery_bench"
CLIENTS = 8
TARGETS = {"completed_per_s": 150, "dispatch_ms_median": 30, "celery_vs_embedded": 0.8}
# The machine counts as loaded when other work took this share of its CPU in a phase.
LOADED_SHARE = 0.10


def fresh_database() -> str:
    admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{DATABASE}"')
    admin.dispose()
    return sqlalchemy.make_url(PG_ADMIN).set(database=DATABASE).render_as_string(False)


def spawn(server: Server, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "opus.cli", *args],
        env=server.env,
        cwd=ROOT,
        stdout=(server.data_dir / f"{args[0]}.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def own_redis(work: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """A redis-server of this benchmark's own on a free port, if one is installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=work,
        stdout=(work / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    end = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > end or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.05)
    client.close()
    return process, url


def bench_dispatch(server: Server, engine: sqlalchemy.Engine, n: int) -> dict[str, Any]:
    client = Client(server.host, server.port)
    delays = []
    try:
        for _ in range(n):
            headers = client.request("POST", "/rest/hello", "PHASE=RUN&name=d", FORM)[1]
            path = headers["Location"].split(server.url, 1)[-1]
            while True:
                data = client.request("GET", f"{path}?WAIT=10")[2]
                if b"<uws:phase>COMPLETED" in data:
                    break
            with engine.connect() as conn:
                created, started = conn.exec_driver_sql(
                    "SELECT creation_time, start_time FROM jobs WHERE id = %(id)s",
                    {"id": path.rsplit("/", 1)[-1]},
                ).one()
            delays.append((started - created).total_seconds() * 1000)
    finally:
        client.close()
    return summary(delays[5:])


def count_ended(engine: sqlalchemy.Engine) -> tuple[int, int]:
    """(COMPLETED, ERROR) jobs: a scan of the table, not made while costs are counted."""
    with engine.connect() as conn:
        result = conn.exec_driver_sql(
            "SELECT phase, count(*) FROM jobs WHERE phase IN ('COMPLETED', 'ERROR') GROUP BY phase"
        )
        rows = {str(phase): int(n) for phase, n in result}
    return int(rows.get("COMPLETED", 0)), int(rows.get("ERROR", 0))


def under_way(engine: sqlalchemy.Engine) -> bool:
    """Whether a job is still QUEUED or EXECUTING (one index entry read)."""
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT 1 FROM jobs WHERE phase IN ('QUEUED', 'EXECUTING') LIMIT 1"
        ).first()
    return row is not None


def bench_throughput(
    server: Server, engine: sqlalchemy.Engine, jobs: int, sampler: Sampler
) -> tuple[dict[str, Any], Usage]:
    """`jobs` created by CLIENTS threads, until none is under way; the counts of completed
    and failed jobs are the caller's to add (read once the costs are counted)."""
    per_thread = jobs // CLIENTS
    errors: list[str] = []

    def submit() -> None:
        client = Client(server.host, server.port)
        try:
            for _ in range(per_thread):
                status, _, data = client.request("POST", "/rest/hello", "PHASE=RUN&name=t", FORM)
                if status != 303:
                    errors.append(f"{status} {data[:200]!r}")
        finally:
            client.close()

    sampler.start()
    start = time.monotonic()
    threads = [threading.Thread(target=submit) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    submitted = time.monotonic() - start
    if errors:
        log(f"{len(errors)} jobs refused, the first: {errors[0]}")
    while under_way(engine):
        if time.monotonic() - start > 600:
            raise RuntimeError("jobs still under way after 600 s")
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    usage = sampler.stop()
    return {
        "jobs": per_thread * CLIENTS,
        "seconds": round(elapsed, 2),
        "created_per_s": round(per_thread * CLIENTS / submitted, 1),
        "refused": len(errors),
    }, usage


def opus_selector(server_pid: int, workers: list[int]) -> Selector:
    """The server's processes: the gunicorn master and workers ("web"), its daemon (the
    embedded "executor", whose children are the "runners", or the "sweeper"); the Celery
    workers. The jobs' processes are counted as the CPU their runner reaped ("jobs")."""

    def select(table: dict[int, Proc]) -> dict[int, tuple[str, str | None]]:
        chosen: dict[int, tuple[str, str | None]] = {}
        if server_pid in table:
            chosen[server_pid] = ("web", None)
        for proc in children(table, server_pid):
            if "opus.daemons" not in proc.cmdline:
                chosen[proc.pid] = ("web", None)
            elif proc.cmdline.endswith("executor"):
                chosen[proc.pid] = ("executor", None)
                for forked in children(table, proc.pid):
                    chosen[forked.pid] = ("runners", "jobs")
            else:
                chosen[proc.pid] = ("sweeper", None)
        for pid in workers:
            if pid in table:
                chosen[pid] = ("celery_workers", "jobs")
        return chosen

    return select


PROFILED = ("web", "celery_workers", "runners", "executor", "sweeper")


def profile(folder: Path, kind: str, select: Selector) -> list[subprocess.Popen[bytes]]:
    """py-spy recording each OPUS process (but gunicorn's master) until SIGINT, its
    stacks collapsed into folder/<cluster>-<process>-<pid>.txt."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    table = process_table()
    spies = []
    for pid, (category, _) in sorted(select(table).items()):
        if category not in PROFILED or (category == "web" and children(table, pid)):
            continue  # gunicorn's master (its workers are its children) neither
        out = folder / f"{kind}-{category}-{pid}.txt"
        command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250"]
        spies.append(
            subprocess.Popen(
                [*command, "--nonblocking", "--output", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=(folder / f"{kind}-{category}-{pid}.log").open("ab"),
            )
        )
    time.sleep(1.0)  # attached
    return spies


@dataclass
class Counters:
    """PostgreSQL's and Redis's counters at one moment."""

    database: dict[str, float]
    own: int  # statements the benchmark had run on the database (each a transaction)
    tables: dict[str, dict[str, float]]
    statements: dict[str, float] | None
    redis: dict[str, float] = field(default_factory=dict)


def count_statements(engine: sqlalchemy.Engine) -> list[int]:
    """The benchmark's own statements on its engine (autocommit: each one transaction),
    counted to be taken from the database's transactions."""
    counted = [0]

    def count(*_args: Any) -> None:
        counted[0] += 1

    sqlalchemy.event.listen(engine, "after_cursor_execute", count)
    return counted


def read_counters(
    admin: sqlalchemy.Engine,
    engine: sqlalchemy.Engine,
    own: list[int],
    statements: bool,
    broker: redis.Redis | None,
) -> Counters:
    database = database_counters(admin, DATABASE)
    return Counters(
        database,
        own[0],
        table_counters(engine),
        statement_counters(engine) if statements else None,
        redis_counters(broker) if broker is not None else {},
    )


def ms(seconds: float, jobs: int) -> float:
    return round(seconds * 1000 / jobs, 3)


def per_job(
    usage: Usage, before: Counters, after: Counters, redis_after: dict[str, float], jobs: int
) -> dict[str, Any]:
    """What a job cost, from a phase's usage and counters."""
    inside = {k: v for k, v in usage.seconds.items() if k != "postgres_aux"}
    ours = sum(usage.seconds.values())
    rest = max(0.0, usage.machine_busy - ours - usage.client)
    cpu = {k: ms(v, jobs) for k, v in sorted(inside.items())}
    cpu["total"] = ms(sum(inside.values()), jobs)
    database = difference(before.database, after.database)
    database["xact_commit"] = database.get("xact_commit", 0.0) - (after.own - before.own)
    tables = {
        name: {k: round(v / jobs, 3) for k, v in difference(before.tables.get(name, {}), t).items()}
        for name, t in sorted(after.tables.items())
    }
    statements = (
        None
        if before.statements is None or after.statements is None
        else {
            k: round(v / jobs, 3)
            for k, v in sorted(difference(before.statements, after.statements).items())
        }
    )
    commands = difference(before.redis, redis_after)
    connections = commands.pop("connections", 0.0)
    return {
        "jobs": jobs,
        "cpu_ms": cpu,
        "cpu_ms_beside": {
            "bench_clients": ms(usage.client, jobs),
            "postgres_shared": ms(usage.seconds.get("postgres_aux", 0.0), jobs),
            "rest_of_machine": ms(rest, jobs),
        },
        # what the cores would do if the cluster had them to itself and were CPU-bound
        "cpu_bound_per_s": round((os.cpu_count() or 1) * jobs / max(sum(inside.values()), 1e-9)),
        "machine": {
            "capacity_cpu_ms": ms(usage.machine_capacity, jobs),
            "busy_cpu_ms": ms(usage.machine_busy, jobs),
            "loaded": rest > LOADED_SHARE * usage.machine_capacity,
        },
        "processes": dict(sorted(usage.processes.items())),
        "processes_ended": usage.gone,
        "postgres": {
            "commits": round(database.get("xact_commit", 0.0) / jobs, 3),
            "rollbacks": round(database.get("xact_rollback", 0.0) / jobs, 3),
            "sessions": round(database.get("sessions", 0.0) / jobs, 4),
            "active_ms": round(database.get("active_time", 0.0) / jobs, 3),
            "rows": {
                k.removeprefix("tup_"): round(v / jobs, 3)
                for k, v in database.items()
                if k.startswith("tup_")
            },
            "statements": statements,
            "tables": {name: t for name, t in tables.items() if t},
        },
        "redis": {
            "commands": round(sum(commands.values()) / jobs, 3),
            "by_command": {k: round(v / jobs, 3) for k, v in sorted(commands.items())},
            "connections": round(connections / jobs, 4),
        },
    }


def run_cluster(
    kind: str, args: argparse.Namespace, broker_url: str | None, jobs: int
) -> dict[str, Any]:
    """Start one cluster ("celery" or "embedded") on a fresh database, measure, stop it."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"opus-{kind}-bench-"))
    database_url = fresh_database()
    admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    # one connection, the benchmark's own: its backend is left out of the costs
    engine = sqlalchemy.create_engine(
        database_url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT"
    )
    own = count_statements(engine)
    broker = redis.Redis.from_url(broker_url) if broker_url else None
    env = {
        "OPUS_JOBDEF_PATH": "",  # the shipped job definitions only
        "OPUS_EXECUTOR_PROCESSES": str(args.workers),
        "OPUS_DATABASE_URL": database_url,
        # 0: no limit, and no count of the caller's active jobs at each creation (a scan
        # of the backlog, which grows here to hundreds of jobs)
        "OPUS_MAX_ACTIVE_JOBS": str(args.max_active),
    }
    if kind == "celery":
        assert broker_url is not None
        env["OPUS_BROKER_URL"] = broker_url
    server: Server | None = None
    helpers: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"loadavg_before": loadavg()}
    try:
        log(f"{kind}: starting")
        server = launch(data_dir, env, workers=2, timeout=60)
        if kind == "celery":
            helpers = [
                spawn(server, "worker", "--concurrency", str(args.concurrency))
                for _ in range(args.workers)
            ]
            time.sleep(5)  # workers connect to the broker
        log(f"{kind}: dispatch latency")
        result["dispatch_ms"] = bench_dispatch(server, engine, 30 if args.quick else 105)
        statements = statements_available(engine)
        result["statements_counted"] = statements  # pg_stat_statements loaded by the server
        log(f"{kind}: {STATS_SETTLE:.0f} s for PostgreSQL's counters to settle")
        time.sleep(STATS_SETTLE)
        done_before, failed_before = count_ended(engine)
        before = read_counters(admin, engine, own, statements, broker)
        selectors = [
            opus_selector(server.process.pid, [h.pid for h in helpers]),
            postgres_selector(postmaster_pid(admin), DATABASE, backend_pids(engine)),
        ]
        redis_process = redis_pid(broker) if broker is not None and not REDIS else None

        def select(table: dict[int, Proc]) -> dict[int, tuple[str, str | None]]:
            chosen: dict[int, tuple[str, str | None]] = {}
            for selector in selectors:
                chosen |= selector(table)
            if redis_process is not None and redis_process in table:
                chosen[redis_process] = ("redis", None)
            return chosen

        spies = profile(args.profile, kind, selectors[0]) if args.profile else []
        log(f"{kind}: throughput, {jobs} jobs")
        try:
            throughput, usage = bench_throughput(server, engine, jobs, Sampler(select))
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                spy.wait(30)
        redis_after = redis_counters(broker) if broker is not None else {}
    finally:
        for helper in helpers:
            os.killpg(helper.pid, signal.SIGTERM)
        for helper in helpers:
            helper.wait(30)
        if server is not None:
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    try:
        # the backends have exited: their last counters are in (read before the drop)
        after = read_counters(admin, engine, own, statements, None)
        done, failed = count_ended(engine)
        completed = done - done_before
        result["throughput"] = {
            "jobs": throughput["jobs"],
            "completed": completed,
            "seconds": throughput["seconds"],
            "completed_per_s": round(completed / throughput["seconds"], 1),
            "created_per_s": throughput["created_per_s"],
            "errors": failed - failed_before + throughput["refused"],
            "refused": throughput["refused"],
        }
        log(f"{kind}: {result['throughput']}")
        result["per_job"] = per_job(usage, before, after, redis_after, completed)
    finally:
        engine.dispose()
        admin.dispose()
        if broker is not None:
            broker.close()
    result["loadavg_after"] = loadavg()
    return result


def best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round of the highest throughput (the least disturbed, on a shared machine)."""
    return max(rounds, key=lambda r: float(r["throughput"]["completed_per_s"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="Celery workers, or runners")
    parser.add_argument("--concurrency", type=int, default=1, help="processes per worker")
    parser.add_argument("--only", choices=["celery", "embedded"], help="one cluster only")
    parser.add_argument(
        "--max-active", type=int, default=0, help="OPUS_MAX_ACTIVE_JOBS (0: no limit)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="clusters measured in turn, the best kept"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy record each OPUS process into this folder"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what was started
    jobs = 200 if args.quick else args.jobs
    work = Path(tempfile.mkdtemp(prefix="opus-celery-bench-"))
    private = None if REDIS else own_redis(work)
    broker_url = private[1] if private else (REDIS or SHARED_REDIS)
    if private is None:
        redis.Redis.from_url(broker_url).flushdb()
    report: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine(),
        "cluster": {
            "web_workers": 2,
            "celery_workers": args.workers,
            "executor_processes": args.workers,
            "database": "postgresql",
            "broker": "redis (the benchmark's own redis-server)" if private else "redis",
        },
        "targets": TARGETS,
    }
    kinds = [k for k in ("celery", "embedded") if args.only in (None, k)]
    measured: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    try:
        for index in range(args.rounds):
            for kind in kinds if index % 2 == 0 else kinds[::-1]:  # each first in turn
                url = broker_url if kind == "celery" else None
                measured[kind].append(run_cluster(kind, args, url, jobs))
    finally:
        if private is not None:
            private[0].terminate()
            private[0].wait(10)
        shutil.rmtree(work, ignore_errors=True)
    if "celery" in measured:
        celery = dict(best(measured["celery"]))
        report["dispatch_ms"] = celery.pop("dispatch_ms")
        report["throughput"] = celery.pop("throughput")
        report["celery"] = celery
    if "embedded" in measured:
        report["embedded"] = best(measured["embedded"])
    if len(kinds) == 2:
        embedded = report["embedded"]["throughput"]["completed_per_s"]
        report["celery_vs_embedded"] = round(report["throughput"]["completed_per_s"] / embedded, 3)
    if args.rounds > 1:
        report["rounds"] = [
            {
                kind: {
                    "completed_per_s": measured[kind][i]["throughput"]["completed_per_s"],
                    "cpu_ms_total": measured[kind][i]["per_job"]["cpu_ms"]["total"],
                    "rest_of_machine_cpu_ms": measured[kind][i]["per_job"]["cpu_ms_beside"][
                        "rest_of_machine"
                    ],
                }
                for kind in kinds
            }
            for i in range(args.rounds)
        ]
    report["machine_after"] = {"python_loop_ms": machine()["python_loop_ms"]}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

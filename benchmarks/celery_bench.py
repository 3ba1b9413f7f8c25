"""Jobs through Celery + Redis + PostgreSQL: one JSON object on stdout.

    python benchmarks/celery_bench.py [--quick] [--jobs 1000] [--workers 2]

Starts, on this machine: `opus serve` (gunicorn, 2 gevent workers) with
OPUS_BROKER_URL on the local Redis (database 9, emptied) and OPUS_DATABASE_URL
on a fresh PostgreSQL database; `--workers` Celery worker processes
(`opus worker --concurrency 1` each) and `opus beat`. Then measures:

1. dispatch_ms: QUEUED -> EXECUTING (creationTime of a job created with
   PHASE=RUN to its startTime), one job at a time on an idle cluster;
2. completed_per_s: `--jobs` hello jobs created with PHASE=RUN by 8 client
   threads, from the first POST to the last COMPLETED (read in the database).

Progress goes to stderr.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests, opus

import redis
import sqlalchemy
from uws_bench import FORM, Client, log, machine, summary

from tests.servers import ROOT, Server, launch

PG_ADMIN = os.environ.get("OPUS_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1/postgres")
REDIS = os.environ.get("OPUS_BENCH_REDIS", "redis://127.0.0.1:6379/9")
DATABASE = "opus_celery_bench"


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


def bench_throughput(server: Server, engine: sqlalchemy.Engine, jobs: int) -> dict[str, Any]:
    with engine.connect() as conn:
        done_before = conn.exec_driver_sql(
            "SELECT count(*) FROM jobs WHERE phase = 'COMPLETED'"
        ).scalar_one()
    per_thread = jobs // 8
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

    start = time.monotonic()
    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    submitted = time.monotonic() - start
    target = done_before + per_thread * 8
    while True:
        with engine.connect() as conn:
            done = conn.exec_driver_sql(
                "SELECT count(*) FROM jobs WHERE phase = 'COMPLETED'"
            ).scalar_one()
            failed = conn.exec_driver_sql(
                "SELECT count(*) FROM jobs WHERE phase = 'ERROR'"
            ).scalar_one()
        if done + failed >= target:
            break
        if time.monotonic() - start > 600:
            raise RuntimeError(f"only {done - done_before} of {per_thread * 8} jobs completed")
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    return {
        "jobs": per_thread * 8,
        "seconds": round(elapsed, 2),
        "completed_per_s": round((done - done_before) / elapsed, 1),
        "created_per_s": round(per_thread * 8 / submitted, 1),
        "errors": failed + len(errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1, help="processes per worker")
    args = parser.parse_args()
    redis.Redis.from_url(REDIS).flushdb()
    data_dir = Path(tempfile.mkdtemp(prefix="opus-celery-bench-"))
    database_url = fresh_database()
    engine = sqlalchemy.create_engine(database_url)
    server: Server | None = None
    helpers: list[subprocess.Popen[bytes]] = []
    report: dict[str, Any] = {
        "machine": machine(),
        "cluster": {
            "web_workers": 2,
            "celery_workers": args.workers,
            "database": "postgresql",
            "broker": "redis",
        },
        "targets": {"completed_per_s": 150, "dispatch_ms_median": 30},
    }
    try:
        server = launch(
            data_dir,
            {
                "OPUS_JOBDEF_PATH": "",  # the shipped job definitions only
                "OPUS_EXECUTOR_PROCESSES": "2",
                "OPUS_BROKER_URL": REDIS,
                "OPUS_DATABASE_URL": database_url,
            },
            workers=2,
            timeout=60,
        )
        helpers = [
            spawn(server, "worker", "--concurrency", str(args.concurrency))
            for _ in range(args.workers)
        ]
        helpers.append(spawn(server, "beat"))
        time.sleep(5)  # workers connect to the broker
        log("dispatch latency")
        report["dispatch_ms"] = bench_dispatch(server, engine, 30 if args.quick else 105)
        log("throughput")
        report["throughput"] = bench_throughput(server, engine, 200 if args.quick else args.jobs)
    finally:
        for helper in helpers:
            os.killpg(helper.pid, signal.SIGTERM)
        for helper in helpers:
            helper.wait(30)
        if server is not None:
            server.stop()
        engine.dispose()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ProvTAP speed over a large provenance store (issue 11): one JSON object on stdout.

    python benchmarks/tap_bench.py [--quick] [--postgres URL] [--rows 1000000] [--explain]

1. Generates a provenance store of `--rows` rows (1,000,000; 100,000 with --quick) in a
   fresh database whose schema `Database.create_schema` made (the real tables and
   indexes): chains of jobs, each job an activity that used the previous job's result
   and generated a new one (prov_used, prov_generations, prov_derivations), associated
   with its owner and the server (and every other job a worker), with 2 parameters, one
   shared activity description and context, and its `jobs` row (COMPLETED, its owner),
   so that the visibility rule works on real rows. 1,000 chains are 100 jobs long (100
   with --quick), half of them the benchmark user's (`owner`), half nine other users';
   shorter chains (1 to 20 jobs) fill up to the row count. The chains are written round
   robin (job k of every chain, then job k + 1), as a server running them side by side
   would have. SQLite: executemany in one transaction; PostgreSQL: COPY in one
   transaction, then VACUUM ANALYZE (what autovacuum does soon after such a load).
2. Starts `opus serve` on it (2 gevent workers, the shipped definitions, anonymous on
   loopback) and makes an admin user and the owner user with `opus user add`.
3. Measures HTTP round trips of sync queries (POST /tap/sync, LANG=ADQL, the default
   BINARY2 VOTable), each answer checked (row count, and for lineage the very ids):
   find_prov_precursors of the last result of a 100-job chain at depth 200 (200 rows),
   as admin and as its owner (and, as a check of visibility, as owner on another user's
   chain: 0 rows); find_prov_descendants of a chain's first entity (200 rows); SELECT
   TOP 100 * FROM tap_schema.columns (anonymous) and FROM provenance.entity (admin and
   owner). Each lineage run takes another chain, so that no answer is a cached page of
   the one before.
4. Job creation (POST /rest/hello name=x, wrk -c16 -t2) for `--seconds` with no query
   load, then with `--clients` threads each looping TOP 100 queries (tap_schema.columns
   and provenance.entity in turn) over its own keep-alive connection, all as admin, then
   half as admin and half as owner, then again without: the ratios loaded / unloaded
   (and, for comparison, the query clients' own rate without creation).

Each measured query gets `--runs` timed runs after a warm-up; one slower than 5 s cuts
its series to 3 timed runs (the answer is still checked).

--postgres URL (e.g. postgresql+psycopg://postgres@127.0.0.1/postgres) makes a database
tap_bench_<random> on that server for the run and drops it at the end (unless --keep).
--explain adds, for the provenance queries, the translated SQL's plan and its time when
run in-process (what the database costs, without HTTP, translation and writing).
Progress goes to stderr. Client, wrk and server share the machine's CPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests, opus, provenance

import sqlalchemy
from sqlalchemy import Table, func, select
from uws_bench import (
    CREATE_LUA,
    FORM,
    Client,
    log,
    log_size,
    machine,
    percentile,
    run_wrk,
    scan_log,
    summary,
)

from opus.ids import ENTITY_PREFIX, JOB_PREFIX, namespace_uri
from opus.store.db import Database
from opus.store.jobs import jobs as JOBS
from opus.store.jobs import new_job
from opus.timeutil import utcnow
from provenance import store as prov
from tests.servers import ROOT, Server, launch

TARGETS = {
    "precursors_100_ms_median": 100,
    "top100_sync_ms_median": 10,
    "create_ratio_under_queries": 0.5,
}
DACHS_2_7_TOP100_TAP_SCHEMA_COLUMNS_MS = 29

OWNER = "owner"  # the benchmark user: the owner of half the chains
ADMIN = "admin"
OTHERS = tuple(f"user{i:02d}" for i in range(1, 10))  # owners of the other chains
JOBDEF = "bench_chain"
DEPTH = 200  # hops asked for: a 100-job chain is 200 (entity -> activity -> entity)
BATCH = 100_000  # rows buffered before they are written
SLOW_S = 5.0  # a query this slow cuts its series short...
SLOW_RUNS = 3  # ...to this many timed runs
PROV_TABLES: tuple[Table, ...] = (
    prov.activity_descriptions,
    prov.usage_descriptions,
    prov.generation_descriptions,
    prov.contexts,
    prov.agents,
    prov.entities,
    prov.activities,
    prov.used,
    prov.generations,
    prov.derivations,
    prov.associations,
    prov.parameters,
)


# -- the store ---------------------------------------------------------------------------------


@dataclass
class Chain:
    owner: str
    length: int
    entities: list[str] = field(default_factory=list)  # local ids: the upload, then results
    jobs: list[str] = field(default_factory=list)


class Loader:
    """Rows written in one transaction: SQLite executemany, PostgreSQL COPY."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self.written: dict[str, int] = {}
        self.conn: Any
        if self.sqlite:
            import sqlite3

            self.conn = sqlite3.connect(str(sqlalchemy.make_url(url).database))
            self.conn.isolation_level = None
            self.conn.execute("BEGIN")
        else:
            import psycopg

            self.conn = psycopg.connect(conninfo(url))

    def write(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        names = [c.name for c in table.columns]
        quoted = ", ".join(f'"{n}"' for n in names)
        if self.sqlite:
            marks = ", ".join("?" for _ in names)
            self.conn.executemany(
                f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks})',
                (tuple(_sqlite_value(r.get(n)) for n in names) for r in rows),
            )
        else:
            with (
                self.conn.cursor() as cursor,
                cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy,
            ):
                for r in rows:
                    copy.write_row(tuple(r.get(n) for n in names))
        self.written[table.name] = self.written.get(table.name, 0) + len(rows)

    def commit(self) -> None:
        if self.sqlite:
            self.conn.execute("COMMIT")
        else:
            self.conn.commit()
        self.conn.close()


def _sqlite_value(value: Any) -> Any:
    # SQLAlchemy's SQLite DateTime storage format, which the server's readers parse back
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value


def conninfo(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg takes it."""
    return sqlalchemy.make_url(url).set(drivername="postgresql").render_as_string(False)


def plan(target_rows: int, long_chains: int, rng: random.Random) -> list[Chain]:
    """The chains to write: `long_chains` of 100 jobs, then short ones up to the rows."""
    per_job = 9.5  # activity, entity, used, generation, derivation, 2.5 associations, 2 params
    chains = [
        Chain(OWNER if i % 2 == 0 else OTHERS[(i // 2) % len(OTHERS)], 100)
        for i in range(long_chains)
    ]
    rows = 30 + sum(1 + c.length * per_job for c in chains)  # 30: the shared rows
    i = 0
    while rows < target_rows:
        length = rng.randint(1, 20)
        chains.append(Chain(OWNER if i % 2 == 0 else OTHERS[i % len(OTHERS)], length))
        rows += 1 + length * per_job
        i += 1
    return chains


def generate(url: str, target_rows: int, long_chains: int, seed: int = 11) -> list[Chain]:
    """Write the store; the chains written (their ids)."""
    rng = random.Random(seed)

    def hex16() -> str:
        return f"{rng.getrandbits(64):016x}"

    chains = plan(target_rows, long_chains, rng)
    loader = Loader(url)
    buffers: dict[str, list[dict[str, Any]]] = {t.name: [] for t in (*PROV_TABLES, JOBS)}
    tables = {t.name: t for t in (*PROV_TABLES, JOBS)}
    pending = 0

    def add(table: Table, row: dict[str, Any]) -> None:
        nonlocal pending
        buffers[table.name].append(row)
        pending += 1
        if pending >= BATCH:
            flush()

    def flush() -> None:
        nonlocal pending
        for name, rows in buffers.items():
            loader.write(tables[name], rows)
            rows.clear()
        pending = 0

    from opus import __version__

    now = utcnow().replace(microsecond=0)
    base = now - timedelta(days=30)
    description = f"opus:jobdef_{JOBDEF}_1"
    context = {
        "python": sys.version.split()[0],
        "platform": "Linux-bench",
        "host": "bench",
        "package:opus-uws": __version__,
        "package:sqlalchemy": sqlalchemy.__version__,
        "worker": "bench-worker",
        "pid": "4242",
    }
    digest = hashlib.sha256(json.dumps(sorted(context.items())).encode()).hexdigest()[:16]
    context_id = f"opus:context_{digest}"
    server_agent = f"opus:opus_{__version__.replace('.', '_')}"
    workers = ("opus:worker_bench1", "opus:worker_bench2")
    add(
        prov.activity_descriptions,
        dict(
            id=description,
            name=JOBDEF,
            version="1",
            type="processing",
            subtype="append",
            doculink=None,
            description="appends a line to its input (a generated benchmark chain step)",
        ),
    )
    add(
        prov.usage_descriptions,
        dict(
            description_id=description,
            role="input",
            description="the file to append to",
            multiplicity="1",
            content_type="text/plain",
        ),
    )
    add(
        prov.generation_descriptions,
        dict(
            description_id=description,
            role="output",
            description="the input with one line more",
            multiplicity="1",
            content_type="text/plain",
        ),
    )
    for key, value in context.items():
        add(prov.contexts, dict(context_id=context_id, key=key, value=value))
    for name in (OWNER, *OTHERS):
        add(prov.agents, dict(id=f"opus:user_{name}", type="Person", name=name))
    add(prov.agents, dict(id=server_agent, type="SoftwareAgent", name="OPUS", version=__version__))
    for worker in workers:
        add(prov.agents, dict(id=worker, type="SoftwareAgent", name=worker, version=__version__))

    def entity(local: str, at: datetime, kind: str) -> dict[str, Any]:
        return dict(
            id=ENTITY_PREFIX + local,
            name="output.txt" if kind == "result" else "input.txt",
            location=f"/store/{local}",
            content_type="text/plain",
            size=rng.randint(10, 100_000),
            sha256=f"{rng.getrandbits(256):064x}",
            generated_at=at if kind == "result" else None,
            kind=kind,
        )

    for chain in chains:  # every chain starts from an uploaded file
        local = hex16()
        chain.entities.append(local)
        add(prov.entities, entity(local, base, "upload"))
    number = 0
    active = list(chains)
    step = 0
    while active:
        for chain in active:
            job_id, result = hex16(), hex16()
            start = base + timedelta(seconds=number)
            end = start + timedelta(seconds=2)
            activity, previous = JOB_PREFIX + job_id, ENTITY_PREFIX + chain.entities[-1]
            row = new_job(
                id=job_id,
                jobdef=JOBDEF,
                owner=chain.owner,
                phase="COMPLETED",
                creation_time=start - timedelta(seconds=1),
                execution_duration=60,
                destruction=now + timedelta(days=30),
            )
            row |= dict(start_time=start, end_time=end, worker=workers[number % 2])
            add(JOBS, row)
            add(
                prov.activities,
                dict(
                    id=activity,
                    name=JOBDEF,
                    start_time=start,
                    end_time=end,
                    status="COMPLETED",
                    description_id=description,
                    context_id=context_id,
                    comment=None,
                ),
            )
            add(prov.entities, entity(result, end, "result"))
            add(prov.used, dict(activity_id=activity, entity_id=previous, role="input", time=start))
            add(
                prov.generations,
                dict(
                    entity_id=ENTITY_PREFIX + result, activity_id=activity, role="output", time=end
                ),
            )
            add(
                prov.derivations,
                dict(generated_id=ENTITY_PREFIX + result, used_id=previous, activity_id=activity),
            )
            agents = [(f"opus:user_{chain.owner}", "owner"), (server_agent, "server")]
            if number % 2:
                agents.append((workers[number % 2], "worker"))
            for agent, role in agents:
                add(prov.associations, dict(activity_id=activity, agent_id=agent, role=role))
            add(
                prov.parameters,
                dict(activity_id=activity, name="text", value=f"step{step}", datatype="char"),
            )
            add(
                prov.parameters,
                dict(activity_id=activity, name="count", value=str(step + 1), datatype="int"),
            )
            chain.jobs.append(job_id)
            chain.entities.append(result)
            number += 1
        step += 1
        active = [c for c in active if c.length > step]
    flush()
    loader.commit()
    return chains


def count_rows(url: str) -> dict[str, int]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            found = {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in PROV_TABLES
            }
            found["total_provenance"] = sum(found.values())
            found["jobs"] = int(conn.execute(select(func.count()).select_from(JOBS)).scalar_one())
    finally:
        engine.dispose()
    return found


def vacuum_analyze(url: str) -> None:
    import psycopg

    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


@contextlib.contextmanager
def postgres_database(admin_url: str, keep: bool) -> Iterator[str]:
    """A fresh database tap_bench_<random> on the server of admin_url, dropped at the end."""
    name = f"tap_bench_{secrets.token_hex(4)}"
    admin = sqlalchemy.make_url(admin_url)
    engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        log(f"PostgreSQL database {name}")
        yield admin.set(database=name).render_as_string(False)
    finally:
        if keep:
            log(f"kept PostgreSQL database {name}")
        else:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


# -- queries ---------------------------------------------------------------------------------


def add_user(server: Server, name: str, admin: bool) -> str:
    """A user made with `opus user add`, as an operator would; its token."""
    command = [sys.executable, "-m", "opus.cli", "user", "add", name, "--max-active", "0"]
    done = subprocess.run(
        command + (["--admin"] if admin else []),
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def headers(token: str | None) -> dict[str, str]:
    return FORM | ({"Authorization": f"Bearer {token}"} if token else {})


def sync(client: Client, query: str, token: str | None, **more: str) -> tuple[float, int, bytes]:
    """One sync query: (seconds, status, body)."""
    body = urlencode({"LANG": "ADQL", "QUERY": query, **more})
    start = time.perf_counter()
    status, _, data = client.request("POST", "/tap/sync", body, headers(token))
    return time.perf_counter() - start, status, data


def query_ok(status: int, data: bytes) -> str | None:
    """None, or what is wrong with the answer."""
    if status != 200:
        return f"HTTP {status}: {data[:300]!r}"
    if b'name="QUERY_STATUS" value="OK"' not in data[:4000]:
        return f"not OK: {data[:600]!r}"
    return None


def table_of(data: bytes) -> Any:
    """The result table (astropy), for checking answers outside the timed part."""
    from astropy.io.votable import parse  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse(io.BytesIO(data)).get_first_table().to_table()


Expect = Callable[[Any], str | None]  # the result table -> None, or what is wrong


def rows_are(count: int) -> Expect:
    def check(table: Any) -> str | None:
        return None if len(table) == count else f"{len(table)} rows, not {count}"

    return check


def ids_are(expected: set[str], deepest: int) -> Expect:
    def check(table: Any) -> str | None:
        if len(table) != len(expected):
            return f"{len(table)} rows, not {len(expected)}"
        found = {str(v) for v in table["id"]}
        if found != expected:
            extra, missing = sorted(found - expected)[:3], sorted(expected - found)[:3]
            return f"other ids: {extra} instead of {missing}"
        if int(max(table["depth"])) != deepest:
            return f"deepest row at depth {int(max(table['depth']))}, not {deepest}"
        return None

    return check


def series(
    client: Client,
    name: str,
    make: Callable[[int], tuple[str, str | None, Expect]],
    warmup: int,
    n: int,
) -> dict[str, Any]:
    """Round trips of `warmup` + `n` queries (make(i): query, token, check); every answer
    checked, the last n timed. A query slower than SLOW_S (a plan gone wrong) cuts the
    series short: SLOW_RUNS runs timed, from that one on."""
    times: list[float] = []
    problems: list[str] = []
    rows = size = runs = 0
    slow = False
    while len(times) < n:
        query, token, expect = make(runs)
        seconds, status, data = sync(client, query, token)
        problem = query_ok(status, data)
        if problem is None:
            table = table_of(data)
            rows, size = len(table), len(data)
            problem = expect(table)
        if problem is not None:
            problems.append(f"run {runs}: {problem}")
        if seconds > SLOW_S and not slow:
            slow, n = True, min(n, SLOW_RUNS)
            log(f"{name}: {seconds:.1f} s, only {n} runs timed")
        if runs >= warmup or slow:
            times.append(seconds * 1000)
        runs += 1
    result: dict[str, Any] = summary(times) | {
        "min": round(min(times), 2),
        "rows": rows,
        "bytes": size,
        "check": "ok" if not problems else f"{len(problems)} wrong: {problems[0][:400]}",
    }
    if slow:
        result["cut_short"] = f"a run took over {SLOW_S} s: {len(times)} runs timed"
    log(f"{name}: {result}")
    return result


@dataclass
class Fixture:
    """What the queries need: the server, tokens, chains."""

    server: Server
    admin: str
    owner: str
    mine: list[Chain]  # the owner's 100-job chains
    theirs: list[Chain]  # other users' 100-job chains

    def uri(self, local: str, kind: str) -> str:
        return namespace_uri(self.server.url) + f"{kind}_{local}"

    def nodes(self, chain: Chain, entities: list[str]) -> set[str]:
        return {self.uri(j, "job") for j in chain.jobs} | {self.uri(e, "ent") for e in entities}


def precursors(fx: Fixture, chains: list[Chain], token: str, hidden: bool = False) -> Any:
    def make(i: int) -> tuple[str, str | None, Expect]:
        chain = chains[i % len(chains)]
        end = fx.uri(chain.entities[-1], "ent")
        query = f"SELECT * FROM find_prov_precursors('{end}', {DEPTH}) AS p"
        expect = rows_are(0) if hidden else ids_are(fx.nodes(chain, chain.entities[:-1]), DEPTH)
        return query, token, expect

    return make


def descendants(fx: Fixture, chains: list[Chain], token: str) -> Any:
    def make(i: int) -> tuple[str, str | None, Expect]:
        chain = chains[i % len(chains)]
        first = fx.uri(chain.entities[0], "ent")
        query = f"SELECT * FROM find_prov_descendants('{first}', {DEPTH}) AS d"
        return query, token, ids_are(fx.nodes(chain, chain.entities[1:]), DEPTH)

    return make


def fixed(query: str, token: str | None, expect: Expect) -> Any:
    def make(_: int) -> tuple[str, str | None, Expect]:
        return query, token, expect

    return make


TOP_COLUMNS = "SELECT TOP 100 * FROM tap_schema.columns"
TOP_ENTITY = "SELECT TOP 100 * FROM provenance.entity"


def bench_queries(fx: Fixture, warmup: int, n: int) -> dict[str, Any]:
    client = Client(fx.server.host, fx.server.port)
    try:
        _, status, data = sync(client, "SELECT * FROM tap_schema.columns", None)
        if query_ok(status, data) is not None:
            raise RuntimeError(f"tap_schema.columns: {query_ok(status, data)}")
        columns = min(100, len(table_of(data)))
        found: dict[str, Any] = {}
        found["precursors_100_ms"] = {
            "admin": series(
                client, "precursors admin", precursors(fx, fx.mine, fx.admin), warmup, n
            ),
            "owner": series(
                client, "precursors owner", precursors(fx, fx.mine, fx.owner), warmup, n
            ),
            "owner_on_others_chain": series(
                client,
                "precursors owner, another's chain",
                precursors(fx, fx.theirs, fx.owner, hidden=True),
                warmup,
                n,
            ),
        }
        found["descendants_100_ms"] = {
            "admin": series(
                client, "descendants admin", descendants(fx, fx.mine, fx.admin), warmup, n
            ),
            "owner": series(
                client, "descendants owner", descendants(fx, fx.mine, fx.owner), warmup, n
            ),
        }
        found["top100_tap_schema_columns_ms"] = series(
            client,
            "TOP 100 tap_schema.columns",
            fixed(TOP_COLUMNS, None, rows_are(columns)),
            warmup,
            n,
        )
        found["top100_provenance_entity_ms"] = {
            "admin": series(
                client,
                "TOP 100 entity admin",
                fixed(TOP_ENTITY, fx.admin, rows_are(100)),
                warmup,
                n,
            ),
            "owner": series(
                client,
                "TOP 100 entity owner",
                fixed(TOP_ENTITY, fx.owner, rows_are(100)),
                warmup,
                n,
            ),
        }
    finally:
        client.close()
    return found


# -- creation under query load ------------------------------------------------------------------


@dataclass
class QueryLoad:
    """Threads looping TOP 100 queries (alternately of tap_schema.columns and
    provenance.entity), each over its own keep-alive connection with its own token."""

    fx: Fixture
    tokens: list[str]  # one thread each
    stop: threading.Event = field(default_factory=threading.Event)
    done: list[tuple[float, float]] = field(default_factory=list)  # (end time, seconds)
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for k, token in enumerate(self.tokens):
            thread = threading.Thread(target=self.loop, args=(k, token), daemon=True)
            thread.start()
            self.threads.append(thread)

    def loop(self, k: int, token: str) -> None:
        client = Client(self.fx.server.host, self.fx.server.port)
        i = k
        try:
            while not self.stop.is_set():
                query = (TOP_COLUMNS, TOP_ENTITY)[i % 2]
                i += 1
                try:
                    seconds, status, data = sync(client, query, token)
                    problem = query_ok(status, data)
                except OSError as exc:
                    seconds, problem = 0.0, repr(exc)
                    client.close()
                    client = Client(self.fx.server.host, self.fx.server.port)
                with self.lock:
                    if problem is None:
                        self.done.append((time.monotonic(), seconds))
                    else:
                        self.errors.append(problem[:300])
        finally:
            client.close()

    def finish(self) -> float:
        """Stop the clients once their queries are answered; how long that took, s."""
        begin = time.monotonic()
        self.stop.set()
        for thread in self.threads:
            thread.join(180)
        return round(time.monotonic() - begin, 1)

    def between(self, begin: float, end: float) -> dict[str, Any]:
        with self.lock:
            within = [s * 1000 for t, s in self.done if begin <= t <= end]
            errors = list(self.errors)
        found: dict[str, Any] = {
            "clients": len(self.tokens),
            "queries_answered": len(within),
            "queries_per_s": round(len(within) / (end - begin), 1),
            "errors": len(errors),
            "first_errors": errors[:2],
        }
        if within:
            found["latency_ms"] = {
                "median": round(statistics.median(within), 2),
                "p90": round(percentile(within, 90), 2),
                "max": round(max(within), 2),
            }
        return found


def bench_creation(fx: Fixture, clients: int, seconds: int, work: Path) -> dict[str, Any]:
    """Creation alone, `clients` query clients as admin alone (no creation), creation
    under as many query clients as admin, under as many half admin and half owner, and
    creation alone again."""
    url = f"{fx.server.url}/rest/hello"

    def create(label: str, length: int = seconds) -> dict[str, Any]:
        result = run_wrk(url, length, CREATE_LUA, work)
        log(f"create {label}: {result['requests_per_s']}/s, non-2xx {result['non_2xx_3xx']}")
        return result

    def loaded(label: str, tokens: list[str]) -> dict[str, Any]:
        load = QueryLoad(fx, tokens)
        load.start()
        try:
            time.sleep(2)  # every client under way
            begin = time.monotonic()
            result = create(f"with {clients} query clients ({label})")
            end = time.monotonic()
        finally:
            drained = load.finish()
        queries = load.between(begin, end) | {"drained_s": drained}
        log(f"queries meanwhile ({label}): {queries}")
        return {
            "create_per_s": result["requests_per_s"],
            "ratio": round((result["requests_per_s"] or 0.0) / rate, 3) if rate else None,
            "non_2xx_3xx": result["non_2xx_3xx"],
            "create_latency_ms": result["latency_ms"],
            "queries": queries,
        }

    def queries_alone(tokens: list[str]) -> dict[str, Any]:
        load = QueryLoad(fx, tokens)
        load.start()
        try:
            time.sleep(2)
            begin = time.monotonic()
            time.sleep(seconds)
            end = time.monotonic()
        finally:
            drained = load.finish()
        found = load.between(begin, end) | {"drained_s": drained}
        log(f"{len(tokens)} query clients alone: {found}")
        return found

    create("warm-up", 2)
    alone = create("alone")
    rate = alone["requests_per_s"] or 0.0
    admin_queries_alone = queries_alone([fx.admin] * clients)
    as_admin = loaded("admin", [fx.admin] * clients)
    mixed = loaded("admin and owner", [(fx.admin, fx.owner)[k % 2] for k in range(clients)])
    after = create("alone again")
    return {
        "create_alone_per_s": alone["requests_per_s"],
        "create_alone_latency_ms": alone["latency_ms"],
        "create_alone_again_per_s": after["requests_per_s"],
        "non_2xx_3xx_alone": alone["non_2xx_3xx"] + after["non_2xx_3xx"],
        "admin_queries_alone": admin_queries_alone,
        "under_admin_queries": as_admin,
        "under_admin_and_owner_queries": mixed,
        "seconds": seconds,
    }


# -- plans ----------------------------------------------------------------------------------------


def explain(fx: Fixture, runs: int = 5, limit_s: float = 60.0) -> dict[str, Any]:
    """The translated SQL of the provenance queries, its plan and its in-process time (the
    query run `runs` times, once when slower than SLOW_S; stopped past `limit_s`)."""
    from opus.auth import Caller, visible_nodes
    from opus.ids import qualified_name
    from opus.tap.adql import translate
    from opus.tap.schema import Reader

    url = fx.server.db_url
    sqlite = url.startswith("sqlite")
    base = fx.server.url
    namespace = namespace_uri(base)
    chain = fx.mine[0]
    end, first = fx.uri(chain.entities[-1], "ent"), fx.uri(chain.entities[0], "ent")
    queries = {
        "precursors_100": f"SELECT * FROM find_prov_precursors('{end}', {DEPTH}) AS p",
        "descendants_100": f"SELECT * FROM find_prov_descendants('{first}', {DEPTH}) AS d",
        "top100_entity": TOP_ENTITY,
        "top100_tap_schema_columns": TOP_COLUMNS,
    }
    callers = {"admin": Caller(ADMIN, admin=True), "owner": Caller(OWNER)}
    engine = sqlalchemy.create_engine(url)
    found: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            if not sqlite:
                raw.autocommit = True
                raw.execute(f"SET statement_timeout = {int(limit_s * 1000)}")
            for label, query in queries.items():
                for who, caller in callers.items():
                    if label == "top100_tap_schema_columns" and who != "admin":
                        continue  # the same for every reader
                    key = f"{label}_{who}"
                    try:
                        reader = Reader(namespace, base, visible_nodes(caller), sqlite)
                        sql = translate(
                            query,
                            reader,
                            uploads={},
                            maxrec=10_000,
                            max_depth=1000,
                            qname=lambda given: qualified_name(given, base),
                        ).sql
                        found[key] = _explained(raw, sql, sqlite, runs, limit_s)
                        log(f"explain {key}: {found[key].get('sql_ms_median')} ms in-process")
                    except Exception as exc:  # a diagnosis, never the reason a run fails
                        found[key] = {"error": repr(exc)}
    finally:
        engine.dispose()
    return found


def _explained(raw: Any, sql: str, sqlite: bool, runs: int, limit_s: float) -> dict[str, Any]:
    times: list[float] = []
    rows: int | None = None
    for _ in range(runs):
        deadline = time.monotonic() + limit_s
        if sqlite:
            raw.set_progress_handler(lambda d=deadline: int(time.monotonic() > d), 20_000)
        start = time.perf_counter()
        try:
            rows = len(raw.execute(sql).fetchall())
        except Exception as exc:  # interrupted or cancelled past the limit
            return {"stopped_after_s": limit_s, "error": repr(exc)[:300], "sql": sql}
        finally:
            if sqlite:
                raw.set_progress_handler(None, 20_000)
        times.append((time.perf_counter() - start) * 1000)
        if times[-1] > SLOW_S * 1000:
            break
    if sqlite:
        plan_lines = [f"{r[0]}<-{r[1]} {r[3]}" for r in raw.execute("EXPLAIN QUERY PLAN " + sql)]
    else:
        analyze = "ANALYZE, BUFFERS" if times[-1] <= SLOW_S * 1000 else "COSTS"
        plan_lines = [str(r[0]) for r in raw.execute(f"EXPLAIN ({analyze}) " + sql)]
    return {
        "sql_ms_median": round(statistics.median(times), 2),
        "runs": len(times),
        "rows": rows,
        "sql": sql,
        "plan": plan_lines,
    }


def tracebacks(path: Path) -> dict[str, int]:
    """The exceptions the server log's tracebacks end with (of chained ones, the last),
    with their counts."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    found: dict[str, int] = {}
    inside, last = False, ""
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            inside = True
        elif line.startswith(("During handling of the above", "The above exception")):
            if last and found.get(last):
                found[last] -= 1
        elif inside and line and not line[0].isspace():
            last = line[:200]
            found[last] = found.get(last, 0) + 1
            inside = False
    return {k: v for k, v in found.items() if v}


# -- the run --------------------------------------------------------------------------------------


def targets_met(report: dict[str, Any]) -> dict[str, bool | None]:
    def median(*path: str) -> float | None:
        found: Any = report
        for key in path:
            found = found.get(key) if isinstance(found, dict) else None
        return found.get("median") if isinstance(found, dict) else None

    def at_most(value: float | None, limit: float) -> bool | None:
        return None if value is None else value <= limit

    top = TARGETS["top100_sync_ms_median"]

    def ratio_met(key: str) -> bool | None:
        ratio = report.get("creation", {}).get(key, {}).get("ratio")
        return None if ratio is None else ratio >= TARGETS["create_ratio_under_queries"]

    return {
        "precursors_100_admin": at_most(median("precursors_100_ms", "admin"), 100),
        "precursors_100_owner": at_most(median("precursors_100_ms", "owner"), 100),
        "top100_tap_schema_columns": at_most(median("top100_tap_schema_columns_ms"), top),
        "top100_provenance_entity_admin": at_most(
            median("top100_provenance_entity_ms", "admin"), top
        ),
        "top100_provenance_entity_owner": at_most(
            median("top100_provenance_entity_ms", "owner"), top
        ),
        "create_ratio_under_admin_queries": ratio_met("under_admin_queries"),
        "create_ratio_under_admin_and_owner_queries": ratio_met("under_admin_and_owner_queries"),
    }


def code_state() -> dict[str, Any]:
    """The commit measured, and the files that differ from it (others edit the tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(ROOT), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed_files": changed}


def main() -> int:
    # stopped (SIGTERM): the finally clauses stop the server and drop the database
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller store, fewer runs")
    parser.add_argument("--postgres", metavar="URL", help="run on a new database of this server")
    parser.add_argument("--rows", type=int, help="provenance rows (1,000,000; quick 100,000)")
    parser.add_argument("--runs", type=int, help="timed runs of each query (50; quick 10)")
    parser.add_argument("--clients", type=int, default=16, help="query clients under creation")
    parser.add_argument("--seconds", type=int, help="each creation run (10; quick 5)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--explain", action="store_true", help="add plans and in-process times")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (and database)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is required", file=sys.stderr)
        return 2
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    long_chains = 100 if args.quick else 1000
    runs = args.runs or (10 if args.quick else 50)
    warmup = 3 if args.quick else 5
    seconds = args.seconds or (5 if args.quick else 10)

    work = Path(tempfile.mkdtemp(prefix="opus-tap-bench-"))
    data_dir = work / "data"
    data_dir.mkdir()
    started = time.monotonic()
    report: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine(),
        "code": code_state(),
        "database": "postgresql" if args.postgres else "sqlite",
        "server": {"workers": args.workers, "worker_class": "gevent"},
    }
    server: Server | None = None
    server_log: Path | None = None
    with contextlib.ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(postgres_database(args.postgres, args.keep))
        else:
            url = f"sqlite:///{data_dir / 'opus.sqlite'}"
        try:
            begin = time.perf_counter()
            db = Database(url)
            db.create_schema()
            db.engine.dispose()
            report["schema_s"] = round(time.perf_counter() - begin, 2)
            log(f"generating {rows} provenance rows, {long_chains} chains of 100 jobs")
            begin = time.perf_counter()
            chains = generate(url, rows, long_chains)
            report["generate_s"] = round(time.perf_counter() - begin, 2)
            log(f"generated in {report['generate_s']} s")
            if args.postgres:
                begin = time.perf_counter()
                vacuum_analyze(url)
                report["vacuum_analyze_s"] = round(time.perf_counter() - begin, 2)
                log(f"VACUUM ANALYZE in {report['vacuum_analyze_s']} s")
            report["rows"] = count_rows(url)
            report["chains"] = {
                "of_100_jobs": long_chains,
                "shorter": len(chains) - long_chains,
                "owners": 1 + len(OTHERS),
            }
            log(f"rows: {report['rows']}")

            server = launch(
                data_dir,
                {"OPUS_DATABASE_URL": url, "OPUS_JOBDEF_PATH": ""},
                workers=args.workers,
                timeout=120,
            )
            server_log = server.log
            log(f"opus serve on {server.url}")
            longs = chains[:long_chains]
            fx = Fixture(
                server,
                admin=add_user(server, ADMIN, admin=True),
                owner=add_user(server, OWNER, admin=False),
                mine=[c for c in longs if c.owner == OWNER],
                theirs=[c for c in longs if c.owner != OWNER],
            )
            report |= bench_queries(fx, warmup, runs)
            report["creation"] = bench_creation(fx, args.clients, seconds, work)
            if args.explain:
                try:
                    report["plans"] = explain(fx)
                except Exception as exc:  # a diagnosis, never the reason a run fails
                    report["plans"] = {"error": repr(exc)}
        finally:
            logs = data_dir.glob("serve-*.log")
            server_log = server_log or next(logs, data_dir / "serve.log")
            run_end = log_size(server_log)
            if server is not None:
                server.stop()
            report["server_log"] = scan_log(server_log, run_end)
            report["server_log"]["tracebacks"] = tracebacks(server_log)
            report["elapsed_s"] = round(time.monotonic() - started, 1)
            report["targets"] = TARGETS | {
                "dachs_2_7_top100_tap_schema_columns_ms": DACHS_2_7_TOP100_TAP_SCHEMA_COLUMNS_MS
            }
            report["targets_met"] = targets_met(report)
            if args.keep:
                log(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
            print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

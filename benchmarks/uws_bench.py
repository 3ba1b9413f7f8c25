"""Throughput and latency of an OPUS server: one JSON object on stdout.

    python benchmarks/uws_bench.py [--quick] [--workers 2] [--keep] [--user]

Starts its own `opus serve` (gunicorn, gevent workers, embedded executor) on a
free port with a fresh temporary data dir and the default SQLite database, then
measures, in this order:

1. roundtrip_ms: sequential POST /rest/hello (PHASE=RUN) -> GET ?WAIT=10 until
   COMPLETED, over one keep-alive http.client connection;
2. create_per_s: POST /rest/hello name=x (jobs stay PENDING), wrk -c16 -t2;
3. phase_reads_per_s: GET /rest/hello/{id}/phase, wrk -c16 -t2;
4. last100_ms: GET /rest/hello?LAST=100 once the hello list holds 100,000 jobs,
   the missing ones inserted directly into the server's SQLite database.

With --user every request carries a user's API token (Bearer), so that the figures
include authentication (and the job list its visibility predicate); without it the
requests are anonymous. Progress goes to stderr. The server (its whole process group)
is stopped at the end, on error too. Client, wrk and server share the machine's CPUs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as `python3 benchmarks/uws_bench.py`: tests, opus

from opus.phases import FINAL  # noqa: E402
from tests.servers import Server, launch  # noqa: E402

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LIST_SIZE = 100_000
TARGETS = {
    "roundtrip_ms_median": 20,
    "create_per_s": 1000,
    "phase_reads_per_s": 3000,
    "last100_ms": 20,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def machine() -> dict[str, Any]:
    """What the figures were measured on. `python_loop_ms` (a fixed pure-Python loop, best of
    3) tells a slower machine from a slower OPUS when runs of different days are compared:
    machines of the same kind here have differed by 2x and more."""
    best = float("inf")
    for _ in range(3):
        begin = time.perf_counter()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.perf_counter() - begin)
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "python_loop_ms": round(best * 1000),
    }


def summary(values_ms: list[float]) -> dict[str, float | int]:
    return {
        "median": round(statistics.median(values_ms), 2),
        "p90": round(percentile(values_ms, 90), 2),
        "n": len(values_ms),
    }


def start_server(data_dir: Path, workers: int, executor_processes: int) -> Server:
    """`opus serve` on data_dir with the default SQLite database and the shipped job
    definitions only; available when this returns."""
    return launch(
        data_dir,
        {
            "OPUS_JOBDEF_PATH": "",
            "OPUS_EXECUTOR_PROCESSES": str(executor_processes),
            "OPUS_DATABASE_URL": f"sqlite:///{data_dir / 'opus.sqlite'}",
        },
        workers=workers,
        timeout=60,
    )


# Headers every request sends: the Authorization of --user, or none
AUTH: dict[str, str] = {}


def add_user(server: Server) -> str:
    """A user made with `opus user add`, as an operator would; its token."""
    done = subprocess.run(
        [sys.executable, "-m", "opus.cli", "user", "add", "bench", "--max-active", "0"],
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def wrk_headers() -> str:
    return "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in AUTH.items())


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects if the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=AUTH | (headers or {}))
                response = self.conn.getresponse()
                data = response.read()
                return response.status, dict(response.getheaders()), data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def job_phase(document: bytes) -> str:
    phase = ET.fromstring(document).findtext(f"{UWS}phase")
    return phase or ""


def create(client: Client, run: bool) -> str:
    """POST a hello job; the path of its URL."""
    body = "PHASE=RUN&name=x" if run else "name=x"
    status, headers, data = client.request("POST", "/rest/hello", body, FORM)
    if status != 303:
        raise RuntimeError(f"POST /rest/hello: {status} {data[:500]!r}")
    location = headers.get("Location") or headers.get("location") or ""
    return urlsplit(location).path


def roundtrip(client: Client) -> float:
    """One create-and-run -> COMPLETED round trip; seconds."""
    start = time.perf_counter()
    path = create(client, run=True)
    while True:
        status, _, data = client.request("GET", f"{path}?WAIT=10")
        if status != 200:
            raise RuntimeError(f"GET {path}?WAIT=10: {status} {data[:500]!r}")
        phase = job_phase(data)
        if phase == "COMPLETED":
            return time.perf_counter() - start
        if phase in FINAL:
            raise RuntimeError(f"job {path} ended {phase}: {data[:2000]!r}")


def bench_roundtrip(server: Server, warmup: int, n: int) -> dict[str, Any]:
    client = Client(server.host, server.port)
    try:
        log(f"roundtrip: {warmup} warm-up jobs")
        for _ in range(warmup):
            roundtrip(client)
        log(f"roundtrip: {n} measured jobs")
        times = [roundtrip(client) * 1000 for _ in range(n)]
    finally:
        client.close()
    result = summary(times)
    result |= {"min": round(min(times), 2), "max": round(max(times), 2)}
    return result


WRK_NUMBER = r"([\d.]+)([kMG]?)"


def _number(value: str, suffix: str) -> float:
    return float(value) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[suffix]


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def run_wrk(
    url: str, seconds: int, lua: str | None, work: Path, connections: int = 16, threads: int = 2
) -> dict[str, Any]:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if lua is not None:
        script = work / f"wrk-{secrets.token_hex(4)}.lua"
        script.write_text(lua)
        command += ["-s", str(script)]
    command.append(url)
    log("running " + " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    out = done.stdout
    if done.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    latency = {}
    for pct in ("50", "90", "99"):
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        if found:
            latency[f"p{pct}"] = round(_ms(*found.groups()), 2)
    result: dict[str, Any] = {
        "requests_per_s": round(float(rate.group(1)), 1) if rate else None,
        "requests": int(total.group(1)) if total else None,
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
        "latency_ms": latency,
        "connections": connections,
        "threads": threads,
        "seconds": seconds,
    }
    if socket_errors:
        errors = dict(
            zip(
                ("connect", "read", "write", "timeout"),
                map(int, socket_errors.groups()),
                strict=True,
            )
        )
        result["socket_errors"] = errors
    return result


CREATE_LUA = """
wrk.method = "POST"
wrk.body = "name=x"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""


def bench_create(server: Server, seconds: int, work: Path) -> dict[str, Any]:
    return run_wrk(f"{server.url}/rest/hello", seconds, CREATE_LUA + wrk_headers(), work)


def bench_phase_reads(server: Server, seconds: int, work: Path) -> dict[str, Any]:
    client = Client(server.host, server.port)
    try:
        path = create(client, run=False)
        status, _, data = client.request("GET", f"{path}/phase")
        if status != 200 or data.strip() != b"PENDING":
            raise RuntimeError(f"GET {path}/phase: {status} {data[:200]!r}")
    finally:
        client.close()
    result = run_wrk(f"{server.url}{path}/phase", seconds, wrk_headers() or None, work)
    result["path"] = path
    return result


def fill(server: Server, size: int) -> dict[str, Any]:
    """Top the hello list up to `size` jobs by direct insertion; what was done."""
    from sqlalchemy import func, insert, select

    from opus.store.db import Database
    from opus.store.jobs import job_parameters, jobs, new_job
    from opus.timeutil import utcnow

    db = Database(server.db_url)
    try:
        with db.read() as conn:
            existing = conn.execute(
                select(func.count())
                .select_from(jobs)
                .where(jobs.c.jobdef == "hello", jobs.c.phase != "ARCHIVED")
            ).scalar_one()
        missing = max(0, size - existing)
        start = time.perf_counter()
        if missing:
            # What JobService.create writes for POST name=x (PENDING, defaults of the
            # hello definition: executionDuration 60 s, quote 1 s, 30 days to destruction),
            # created over the past day, older than any job posted so far.
            now = utcnow()
            first = now - timedelta(days=1)
            step = timedelta(days=1) / (missing + 1)
            rows, params = [], []
            for i in range(missing):
                job_id = secrets.token_hex(8)
                created = first + step * i
                rows.append(
                    new_job(
                        id=job_id,
                        jobdef="hello",
                        owner=None,
                        phase="PENDING",
                        creation_time=created,
                        execution_duration=60,
                        destruction=created + timedelta(days=30),
                        quote=created + timedelta(seconds=1),
                    )
                )
                params.append(
                    dict(job_id=job_id, name="name", position=0, value="x", by_reference=False)
                )
            with db.write() as conn:
                conn.execute(insert(jobs), rows)
                conn.execute(insert(job_parameters), params)
        seconds = time.perf_counter() - start
        with db.read() as conn:
            total = conn.execute(
                select(func.count())
                .select_from(jobs)
                .where(jobs.c.jobdef == "hello", jobs.c.phase != "ARCHIVED")
            ).scalar_one()
    finally:
        db.engine.dispose()
    return {
        "fill": "direct insert",
        "existing_jobs": existing,
        "inserted": missing,
        "insert_s": round(seconds, 2),
        "jobs_in_list": total,
    }


def bench_last100(server: Server, n: int) -> dict[str, Any]:
    info = fill(server, LIST_SIZE)
    log(f"fill: {info}")
    client = Client(server.host, server.port)
    times = []
    try:
        for i in range(n + 3):
            start = time.perf_counter()
            status, _, data = client.request("GET", "/rest/hello?LAST=100")
            elapsed = (time.perf_counter() - start) * 1000
            if status != 200:
                raise RuntimeError(f"GET /rest/hello?LAST=100: {status} {data[:500]!r}")
            refs = len(ET.fromstring(data).findall(f"{UWS}jobref"))
            if refs != 100:
                raise RuntimeError(f"GET /rest/hello?LAST=100 gave {refs} jobrefs, not 100")
            if i >= 3:  # the first requests warm both workers' caches
                times.append(elapsed)
    finally:
        client.close()
    result = summary(times)
    result |= {"jobrefs": 100, "bytes": len(data), **info}
    return result


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def scan_log(path: Path, run_end: int) -> dict[str, Any]:
    """Errors in the server log, while benchmarking and while shutting down."""
    data = path.read_bytes() if path.exists() else b""

    def scan(text: str) -> dict[str, Any]:
        lines = text.splitlines()
        bad = [
            ln
            for ln in lines
            if re.search(r"\b(ERROR|CRITICAL|Traceback|WORKER TIMEOUT|Error)\b", ln)
        ]
        warnings = [ln for ln in lines if re.search(r"\bWARNING\b", ln)]
        return {
            "lines": len(lines),
            "error_lines": len(bad),
            "warning_lines": len(warnings),
            "first_errors": bad[:6],
        }

    return {
        "during_run": scan(data[:run_end].decode(errors="replace")),
        "at_shutdown": scan(data[run_end:].decode(errors="replace")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs, shorter wrk runs")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--executor-processes", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    parser.add_argument("--user", action="store_true", help="send a user's token every time")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is required", file=sys.stderr)
        return 2

    n_roundtrip = 50 if args.quick else 200
    wrk_seconds = 5 if args.quick else 10
    work = Path(tempfile.mkdtemp(prefix="opus-bench-"))
    data_dir = work / "data"
    server: Server | None = None
    started = time.monotonic()
    report: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine(),
        "server": {
            "workers": args.workers,
            "worker_class": "gevent",
            "database": "sqlite",
            "executor_processes": args.executor_processes,
            "authentication": "bearer token" if args.user else "anonymous",
        },
    }
    try:
        log(f"starting opus serve, data in {data_dir}")
        server = start_server(data_dir, args.workers, args.executor_processes)
        log(f"opus serve on {server.url}, process group {server.process.pid}")
        if args.user:
            AUTH["Authorization"] = f"Bearer {add_user(server)}"
        report["roundtrip_ms"] = bench_roundtrip(server, 20, n_roundtrip)
        log(f"roundtrip_ms: {report['roundtrip_ms']}")
        create = bench_create(server, wrk_seconds, work)
        report["create_per_s"] = create["requests_per_s"]
        report["create_non_2xx_3xx"] = create["non_2xx_3xx"]
        report["create_wrk"] = create
        log(f"create: {create}")
        reads = bench_phase_reads(server, wrk_seconds, work)
        report["phase_reads_per_s"] = reads["requests_per_s"]
        report["phase_reads_non_2xx_3xx"] = reads["non_2xx_3xx"]
        report["phase_reads_wrk"] = reads
        log(f"phase reads: {reads}")
        last = bench_last100(server, 50)
        report["last100_ms"] = {"median": last["median"], "p90": last["p90"], "n": last["n"]}
        report["fill"] = last["fill"]
        report["last100_detail"] = {
            k: v for k, v in last.items() if k not in ("median", "p90", "n", "fill")
        }
        log(f"last100: {last}")
    finally:
        # launch stops a server that never became available (its log is in the error)
        logs = data_dir.glob("serve-*.log")
        server_log = server.log if server else next(logs, data_dir / "serve.log")
        run_end = log_size(server_log)
        if server is not None:
            server.stop()
        report["server_log"] = scan_log(server_log, run_end)
        report["elapsed_s"] = round(time.monotonic() - started, 1)
        report["targets"] = TARGETS
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of provenance: one JSON object on stdout.

    python benchmarks/prov_bench.py [--quick] [--chain 1000]

Starts its own `opus serve` (as uws_bench.py does, with the test job
definitions), then measures:

1. roundtrip_ms: the hello create -> COMPLETED round trip, provenance recorded;
2. record_ms: what recording one hello job costs inside the runner's
   transaction (building the ProvDM records and writing them), measured
   in-process on a copy of the server's database;
3. provsap_all_ms: ProvSAP ID=<last result> DEPTH=ALL (PROV-JSON and the other
   formats) over a chain of N jobs, each using the previous job's result, with
   python_loop_ms measured again just before (the machine may be busier by then);
4. provsap_parts_ms: where that time goes, in-process on the server's database as an
   anonymous reader: the walk (resolving the ID and selecting the records, with the
   visibility rule), building the document, and writing each format.

Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests, opus, provenance

from uws_bench import (
    FORM,
    Client,
    bench_roundtrip,
    job_phase,
    log,
    machine,
    summary,
)

from tests.servers import Server, launch

CHAIN_JOBDEF = "opus_append"


def wait_completed(client: Client, path: str) -> None:
    while True:
        status, _, data = client.request("GET", f"{path}?WAIT=10")
        phase = job_phase(data)
        if status != 200 or phase in ("ERROR", "ABORTED"):
            raise RuntimeError(f"{path}: {status} {data[:1000]!r}")
        if phase == "COMPLETED":
            return


def build_chain(server: Server, length: int) -> str:
    """length jobs, each using the previous result; the qualified id of the last result."""
    client = Client(server.host, server.port)
    try:
        status, headers, _ = client.request("POST", "/rest/hello", "PHASE=RUN&name=chain", FORM)
        path = headers["Location"].split(server.url, 1)[-1]
        wait_completed(client, path)
        result = f"{server.url}{path}/results/greeting"
        for step in range(1, length):
            body = f"PHASE=RUN&text=step{step}&input={quote(result, safe='')}"
            status, headers, data = client.request("POST", f"/rest/{CHAIN_JOBDEF}", body, FORM)
            if status != 303:
                raise RuntimeError(f"step {step}: {status} {data[:500]!r}")
            path = headers["Location"].split(server.url, 1)[-1]
            wait_completed(client, path)
            result = f"{server.url}{path}/results/output"
            if step % 100 == 0:
                log(f"chain: {step} jobs")
        status, _, data = client.request("GET", f"{path}/provenance")
        generated = json.loads(data)["wasGeneratedBy"].values()
        return str(next(iter(generated))["prov:entity"])
    finally:
        client.close()


def bench_provsap(server: Server, entity: str, n: int, length: int) -> dict[str, Any]:
    client = Client(server.host, server.port)
    found: dict[str, Any] = {}
    try:
        for response_format in ("PROV-JSON", "PROV-N", "PROV-XML", "PROV-VOTABLE"):
            path = f"/provsap?ID={quote(entity)}&DEPTH=ALL&RESPONSEFORMAT={response_format}"
            times, size = [], 0
            for _ in range(n):
                start = time.perf_counter()
                status, _, data = client.request("GET", path)
                times.append((time.perf_counter() - start) * 1000)
                if status != 200:
                    raise RuntimeError(f"{path}: {status} {data[:500]!r}")
                size = len(data)
            found[response_format] = summary(times) | {"bytes": size}
        status, _, data = client.request("GET", f"/provsap?ID={quote(entity)}&DEPTH=ALL&MODEL=W3C")
        activities = len(json.loads(data).get("activity", {}))
        if activities != length:
            raise RuntimeError(f"DEPTH=ALL gave {activities} activities, not {length}")
        found["activities"] = activities
    finally:
        client.close()
    return found


def bench_parts(server: Server, entity: str, n: int) -> dict[str, Any]:
    """The parts of a ProvSAP DEPTH=ALL request, in-process, on the running server's
    database (SQLite readers do not block its writer), garbage collection paused as the
    service pauses it."""
    from opus.auth import Caller, visible_nodes
    from opus.provsap.service import gc_paused, namespaces
    from opus.store.db import Database
    from provenance import document, query
    from provenance.serializers import serialize

    db = Database(server.db_url)
    allowed = visible_nodes(Caller(None, anonymous_public=True))
    walks, builds, writes = [], [], {}
    with gc_paused(), db.read() as conn:
        for _ in range(n):
            begin = time.perf_counter()
            query.known_ids(conn, [entity], allowed)
            chosen = query.select_records(conn, [entity], None, "BACK", True, allowed)
            walks.append((time.perf_counter() - begin) * 1000)
            begin = time.perf_counter()
            doc = document.build(conn, chosen, namespaces(server.url), "IVOA", server.url)
            builds.append((time.perf_counter() - begin) * 1000)
        for response_format in ("PROV-JSON", "PROV-N", "PROV-XML", "PROV-VOTABLE"):
            times = []
            for _ in range(n):
                begin = time.perf_counter()
                serialize(doc, response_format)
                times.append((time.perf_counter() - begin) * 1000)
            writes[response_format] = summary(times)
    db.engine.dispose()
    return {"walk": summary(walks), "build": summary(builds), "write": writes}


def bench_record(server: Server, n: int) -> dict[str, Any]:
    """Recording one hello job (a new activity each time, as the runner records each job
    once), in-process, on a copy of the server's database."""
    from opus.config import Settings
    from opus.execution.recording import job_activity
    from opus.jobdefs.registry import load_registry
    from opus.store import jobs as store
    from opus.store.db import Database
    from opus.timeutil import utcnow
    from provenance.capture import record

    scratch = Path(tempfile.mkdtemp(prefix="prov-bench-"))
    shutil.copy(server.data_dir / "opus.sqlite", scratch / "opus.sqlite")
    settings = Settings(data_dir=scratch)
    db = Database(settings.db_url)
    jobdef = load_registry(settings.jobdef_dirs).get("hello")
    assert jobdef is not None
    with db.read() as conn:
        job_id = store.job_ids_in_phase(conn, "COMPLETED", limit=1)[0]
        job = store.get_job(conn, job_id)
        parameters = store.get_parameters(conn, job_id)
        results = store.get_results(conn, job_id)
    assert job is not None
    times = []
    for number in range(n):
        start = time.perf_counter()
        with db.write() as conn:
            activity = job_activity(
                replace(job, id=f"bench{number:012d}"),
                jobdef,
                parameters,
                [],
                results,
                "COMPLETED",
                utcnow(),
                None,
                "bench:1",
            )
            record(conn, activity)
        times.append((time.perf_counter() - start) * 1000)
    shutil.rmtree(scratch, ignore_errors=True)
    return summary(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--chain", type=int, default=1000)
    args = parser.parse_args()
    chain = 100 if args.quick else args.chain
    data_dir = Path(tempfile.mkdtemp(prefix="opus-prov-bench-"))
    started = time.monotonic()
    report: dict[str, Any] = {"machine": machine()}
    server: Server | None = None
    try:
        # the test job definitions (opus_append), the default SQLite database (copied by
        # bench_record)
        server = launch(
            data_dir,
            {
                "OPUS_EXECUTOR_PROCESSES": "2",
                "OPUS_DATABASE_URL": f"sqlite:///{data_dir / 'opus.sqlite'}",
            },
            workers=2,
            timeout=60,
        )
        report["roundtrip_ms"] = bench_roundtrip(server, 20, 50 if args.quick else 200)
        report["record_ms"] = bench_record(server, 200)
        log(f"chain of {chain} jobs")
        begin = time.monotonic()
        last = build_chain(server, chain)
        report["chain"] = {"jobs": chain, "seconds": round(time.monotonic() - begin, 1)}
        loop_ms = machine()["python_loop_ms"]
        report["provsap_all_ms"] = bench_provsap(server, last, 5 if args.quick else 10, chain)
        report["provsap_all_ms"]["python_loop_ms"] = loop_ms
        report["provsap_parts_ms"] = bench_parts(server, last, 5 if args.quick else 10)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    report["targets"] = {"record_share_of_roundtrip": 0.20, "provsap_all_ms_each_format": 200}
    report["record_share_of_roundtrip"] = round(
        report["record_ms"]["median"] / report["roundtrip_ms"]["median"], 3
    )
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The web pages' speed (issue 13): one JSON object on stdout.

    python benchmarks/web_bench.py [--jobs 10000] [--runs 30]

`opus serve` on a fresh SQLite data folder (anonymous access off); a user with `--jobs`
completed jobs, their rows written in one transaction as the server writes them; then,
signed in through /login, the round trip of: the job list's first page, a page deep in
the list (keyset paging: `before` the 5,000th job), the list filtered by phase, the home
page, a job page, and the page of the last job of a chain of `--chain` jobs (each
appending to the previous one's result), whose lineage of that many jobs the page draws
with graphviz (median and p90 of `--runs` after a warm-up; target: the job list of
10,000 jobs under 200 ms). Client and server share the machine's CPUs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests, opus

import requests
import sqlalchemy
from uws_bench import log, machine

from opus.store import jobs as store
from opus.timeutil import utcnow
from tests.servers import ROOT, launch


def timed(session: requests.Session, url: str, runs: int) -> dict[str, Any]:
    session.get(url).raise_for_status()
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        answer = session.get(url)
        times.append((time.perf_counter() - begin) * 1000)
        answer.raise_for_status()
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[int(len(times) * 0.9) - 1], 2),
        "bytes": len(answer.content),
    }


def ended(rest: requests.Session, job: str) -> None:
    """Wait (UWS WAIT) until the job has completed."""
    while (phase := rest.get(f"{job}/phase").text) != "COMPLETED":
        assert phase in ("QUEUED", "EXECUTING"), f"{job} is {phase}"
        rest.get(job, params={"WAIT": "30", "PHASE": phase})


def chain(url: str, auth: tuple[str, str], length: int) -> str:
    """A chain of jobs, each appending to the previous one's result: the last one's page."""
    rest = requests.Session()
    rest.auth = auth
    made = rest.post(f"{url}/rest/hello", data={"PHASE": "RUN", "name": "chain"})
    job = made.url
    result = f"{job}/results/greeting"
    for _ in range(length - 1):
        ended(rest, job)
        made = rest.post(
            f"{url}/rest/opus_append", data={"PHASE": "RUN", "input": result, "text": "+"}
        )
        assert made.ok, made.text
        job = made.url
        result = f"{job}/results/output"
    ended(rest, job)
    page = job.removeprefix(url).replace("/rest/", "/jobs/", 1)
    drawn = requests.get(f"{url}{page}", auth=auth).text.count('class="node activity"')
    assert drawn == length, f"the page draws {drawn} jobs of the chain of {length}"
    log(f"a chain of {length} jobs made")
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--chain", type=int, default=20)
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine(), "jobs": args.jobs}
    with tempfile.TemporaryDirectory() as folder:
        server = launch(Path(folder) / "data", {"OPUS_ALLOW_ANONYMOUS": "false"})
        try:
            made = subprocess.run(
                [sys.executable, "-m", "opus.cli", "user", "add", "ada"],
                env=dict(server.env),
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            token = made.stdout.strip().splitlines()[-1]
            start = utcnow() - timedelta(days=1)
            rows = [
                store.new_job(
                    id=f"{i:016x}",
                    jobdef="hello",
                    owner="ada",
                    phase="COMPLETED" if i % 10 else "ERROR",
                    creation_time=start + timedelta(seconds=i),
                    execution_duration=60,
                    destruction=start + timedelta(days=30),
                    run_id=f"job-{i}",
                )
                for i in range(args.jobs)
            ]
            engine = sqlalchemy.create_engine(server.db_url)
            with engine.begin() as conn:
                conn.execute(sqlalchemy.insert(store.jobs), rows)
            engine.dispose()
            log(f"{args.jobs} jobs written")
            session = requests.Session()
            form = session.get(f"{server.url}/login").text
            csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            signed = session.post(
                f"{server.url}/login",
                data={"name": "ada", "token": token, "csrf": csrf},
                allow_redirects=False,
            )
            assert signed.status_code == 303, signed.text
            middle = f"{args.jobs // 2:016x}"
            pages = {
                "job_list_first_page": "/jobs",
                "job_list_deep_page": f"/jobs?before={middle}",
                "job_list_by_phase": "/jobs?phase=ERROR",
                "home": "/",
                "job_page": f"/jobs/hello/{middle}",
            }
            pages["job_page_with_lineage"] = chain(server.url, ("ada", token), args.chain)
            for key, path in pages.items():
                report[key] = timed(session, f"{server.url}{path}", args.runs)
                log(f"{key}: {report[key]['median_ms']} ms")
        finally:
            server.stop()
    report["targets"] = {"job_list_ms_at_most": 200}
    report["targets_met"] = {
        "job_list": max(report[k]["median_ms"] for k in report if k.startswith("job_list")) <= 200
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

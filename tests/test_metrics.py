"""`/metrics`: the Prometheus text of real servers, checked against what they were made to do.

The embedded server runs jobs that complete, fail and are aborted, answers requests (a 404
among them), and is scraped with a plain HTTP client: its numbers add up what the web
workers and the runner processes counted (multiprocess mode), and what the store says.
The Celery server shows its broker and queue, then what a worker given the host's metrics
folder counted. Who may read the metrics is checked in process, anonymous access off.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import requests
import webtest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from opus.accounts import Accounts
from opus.app import create_app
from opus.config import Settings
from opus.execution.celery_app import EPOCH_KEY, QUEUE
from opus.store.db import Database
from opus.store.migrate import ensure_current
from tests.servers import TEST_JOBDEFS, Server, free_port
from tests.test_celery import SHARED_REDIS, Cluster, require_redis
from tests.test_execution import job_column, started_sleeper, wait_for

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# a Redis database of this module's own (test_celery flushes 7, test_science 8)
METRICS_REDIS = urlsplit(SHARED_REDIS)._replace(path="/9").geturl()
ENDINGS = ("COMPLETED", "ERROR", "ABORTED")


def scrape(url: str, headers: dict[str, str] | None = None) -> list[Sample]:
    """Every sample of the server's metrics, read as Prometheus reads them."""
    response = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == CONTENT_TYPE
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples of that name whose labels include these (0: none)."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def series(samples: list[Sample], name: str) -> list[dict[str, str]]:
    return [s.labels for s in samples if s.name == name]


def scraped_when(
    url: str, done: Callable[[list[Sample]], bool], what: str
) -> tuple[list[Sample], int]:
    """The first scrape showing `done`, and how many scrapes it took: a runner counts a
    job's end just after storing it, so a client may see the phase a moment before."""
    found: list[list[Sample]] = []

    def ready() -> bool:
        found.append(scrape(url))
        return done(found[-1])

    wait_for(ready, 10, what)
    return found[-1], len(found)


def heartbeat(server: Server, url: str) -> float:
    (beat,) = job_column(server, [url], "heartbeat")
    return datetime.fromisoformat(str(beat)).replace(tzinfo=UTC).timestamp()


def phase_of(doc: etree._Element) -> str | None:
    return doc.findtext("{http://www.ivoa.net/xml/UWS/v1.0}phase")


def test_a_scrape_adds_up_what_the_server_did(start_server: Callable[..., Server]) -> None:
    began = time.time()
    server = start_server()
    before = scrape(server.url)
    assert value(before, "opus_database_up") == 1
    assert value(before, "opus_jobs_ended_total") == 0
    # every phase a job can reach, of every definition: 0 before any job
    phases = {s["phase"] for s in series(before, "opus_jobs") if s["jobdef"] == "hello"}
    assert phases == {"PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED"}
    assert value(before, "opus_jobs") == 0

    sleeping, _pid = started_sleeper(server)
    beat_before = heartbeat(server, sleeping)
    running = scrape(server.url)
    beat_after = heartbeat(server, sleeping)  # a runner beats every 5 s
    assert value(running, "opus_jobs", jobdef="sleeper", phase="EXECUTING") == 1
    (worker,) = job_column(server, [sleeping], "worker")
    assert series(running, "opus_worker_up") == [{"worker": worker}]
    assert value(running, "opus_worker_up", worker=worker) == 1
    stamp = value(running, "opus_worker_last_heartbeat_timestamp_seconds", worker=worker)
    assert began - 1 <= beat_before <= stamp <= beat_after <= time.time() + 1
    aborted = server.session.post(f"{sleeping}/phase", data={"PHASE": "ABORT"})
    assert aborted.status_code == 200

    done = [server.create("hello", name=f"n{i}") for i in range(2)]
    failed = server.create("failing", reason="on purpose")
    pending = server.create("hello", run=False, name="later")
    dropped = server.create("hello", run=False, name="never run")
    assert server.session.post(f"{dropped}/phase", data={"PHASE": "ABORT"}).status_code == 200
    ends = [(done[0], "COMPLETED"), (done[1], "COMPLETED"), (failed, "ERROR")]
    for url, phase in [*ends, (sleeping, "ABORTED")]:
        assert phase_of(server.wait_final(url)) == phase
    for _ in range(3):
        assert server.session.get(f"{server.url}/jdl").status_code == 200
    assert server.session.get(f"{server.url}/no/such/thing").status_code == 404
    assert server.phase(pending) == "PENDING"

    found, scrapes = scraped_when(
        server.url, lambda s: value(s, "opus_jobs_ended_total") == 5, "five jobs counted as ended"
    )
    # jobs by definition and phase: what the store holds
    assert value(found, "opus_jobs", jobdef="hello", phase="COMPLETED") == 2
    assert value(found, "opus_jobs", jobdef="hello", phase="PENDING") == 1
    assert value(found, "opus_jobs", jobdef="failing", phase="ERROR") == 1
    assert value(found, "opus_jobs", jobdef="sleeper", phase="ABORTED") == 1
    assert value(found, "opus_jobs", jobdef="hello", phase="ABORTED") == 1
    assert value(found, "opus_jobs") == 6
    assert value(found, "opus_queue_length") == 0
    assert series(found, "opus_worker_up") == []  # no job is running any more
    # jobs ended, by outcome: counted by the runner processes (a job aborted before it
    # started, by the web worker)
    ended = {
        (s.labels["jobdef"], s.labels["phase"]): s.value
        for s in found
        if s.name == "opus_jobs_ended_total"
    }
    assert ended == {
        ("hello", "COMPLETED"): 2,
        ("hello", "ABORTED"): 1,
        ("failing", "ERROR"): 1,
        ("sleeper", "ABORTED"): 1,
    }
    for jobdef, jobs in [("hello", 2), ("failing", 1), ("sleeper", 1)]:
        for histogram in ("opus_job_queued_seconds", "opus_job_runtime_seconds"):
            assert value(found, f"{histogram}_count", jobdef=jobdef) == jobs, (histogram, jobdef)
            last = value(found, f"{histogram}_bucket", jobdef=jobdef, le="+Inf")
            assert last == jobs
            assert 0 <= value(found, f"{histogram}_sum", jobdef=jobdef) <= time.time() - began
    assert value(found, "opus_job_runtime_seconds_count", jobdef="tap") == 0
    # requests, by route rule (never the path), method and status: the two web workers' sum
    requests_total = "opus_http_requests_total"
    assert value(found, requests_total, route="/jdl", method="GET", status="200") == 3
    assert value(found, requests_total, route="/jdl") == 3
    assert value(found, requests_total, route="unmatched", status="404") == 1
    assert value(found, requests_total, status="404") == 1
    assert value(found, requests_total, route="/rest/<jobdef>", method="POST", status="303") == 6
    # the scrapes before this one (a request is counted once answered)
    assert value(found, requests_total, route="/metrics", status="200") == 2 + scrapes - 1
    assert not [s for s in series(found, requests_total) if "no/such" in s["route"]]
    duration = "opus_http_request_duration_seconds"
    assert value(found, f"{duration}_count", route="/jdl", method="GET") == 3
    assert value(found, f"{duration}_bucket", route="/jdl", method="GET", le="+Inf") == 3
    assert value(found, "opus_http_requests_in_progress") == 1  # this scrape
    assert value(found, "opus_database_up") == 1
    assert value(found, "opus_executor_up") == 1
    # a definition restricted to a group is not named to an anonymous reader
    assert not [s for s in found if s.labels.get("jobdef") == "partners"]


def test_a_celery_server_shows_its_broker_and_what_a_worker_counted(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    require_redis(METRICS_REDIS)
    broker = redis.Redis.from_url(METRICS_REDIS)
    broker.flushdb()
    broker.set(EPOCH_KEY, "now")  # not a restarted Redis: the sweep sends no job again
    cluster = Cluster(start_server, METRICS_REDIS, tmp_path)
    try:
        server = cluster.server
        urls = [server.create("hello", name=f"q{i}") for i in range(3)]
        waiting = scrape(server.url)
        assert value(waiting, "opus_broker_up") == 1
        assert value(waiting, "opus_broker_queue_length", queue_name=QUEUE) == 3
        assert broker.llen(QUEUE) == 3
        assert value(waiting, "opus_queue_length") == 3
        assert value(waiting, "opus_jobs", jobdef="hello", phase="QUEUED") == 3
        assert series(waiting, "opus_executor_up") == []

        # a worker on the server's host counts into the server's metrics folder
        assert "PROMETHEUS_MULTIPROC_DIR" not in server.env
        cluster.worker(concurrency=1)
        for url in urls:
            assert phase_of(server.wait_final(url, timeout=30)) == "COMPLETED"
        found, _ = scraped_when(
            server.url,
            lambda s: value(s, "opus_jobs_ended_total") == 3,
            "the worker's three jobs counted",
        )
        assert value(found, "opus_jobs_ended_total", jobdef="hello", phase="COMPLETED") == 3
        assert value(found, "opus_job_runtime_seconds_count", jobdef="hello") == 3
        assert value(found, "opus_job_queued_seconds_count", jobdef="hello") == 3
        assert value(found, "opus_queue_length") == 0
        assert value(found, "opus_broker_queue_length", queue_name=QUEUE) == 0

        # a worker on a host of its own (a data folder of its own) serves what its jobs
        # counted at OPUS_METRICS_PORT; the web server's scrape holds none of it
        local = cluster.workers[0]
        os.killpg(local.pid, signal.SIGTERM)
        local.wait(20)
        port = free_port()
        elsewhere = {"OPUS_DATA_DIR": str(tmp_path / "worker-host"), "OPUS_METRICS_PORT": str(port)}
        cluster.worker(1, env=elsewhere)
        far = [server.create("hello", name=f"far{i}") for i in range(2)]
        for url in far:
            assert phase_of(server.wait_final(url, timeout=40)) == "COMPLETED"
        worker_url = f"http://127.0.0.1:{port}"
        remote, _ = scraped_when(
            worker_url,
            lambda s: value(s, "opus_jobs_ended_total") == 2,
            "the worker host's two jobs counted at its own port",
        )
        assert value(remote, "opus_job_runtime_seconds_count", jobdef="hello") == 2
        assert value(scrape(server.url), "opus_jobs_ended_total") == 3
        assert value(scrape(server.url), "opus_jobs", jobdef="hello", phase="COMPLETED") == 5
    finally:
        cluster.stop()


# -- who may read them (in process, anonymous access off) ---------------------------------


@pytest.fixture(scope="module")
def closed_app(tmp_path_factory: pytest.TempPathFactory) -> tuple[webtest.TestApp, dict[str, str]]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("opus-metrics"),
        database_url="",
        broker_url="",
        allow_anonymous=False,
        jobdef_path=str(TEST_JOBDEFS),
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    ensure_current(db)
    accounts = Accounts(db)
    tokens = {
        "root": accounts.add_user("root", [], admin=True),
        "bob": accounts.add_user("bob", []),
    }
    db.engine.dispose()
    return webtest.TestApp(create_app(settings)), tokens


@pytest.mark.any_database  # an SQLite database of its own
def test_only_admins_read_the_metrics_of_a_server_with_credentials(
    closed_app: tuple[webtest.TestApp, dict[str, str]],
) -> None:
    app, tokens = closed_app
    app.get("/metrics", status=401)
    refused = app.get("/metrics", headers={"Authorization": f"Bearer {tokens['bob']}"}, status=403)
    assert refused.text == "the metrics are for admins: bob is not an admin\n"
    read = app.get("/metrics", headers={"Authorization": f"Bearer {tokens['root']}"}, status=200)
    assert read.headers["Content-Type"] == CONTENT_TYPE
    samples = [s for f in text_string_to_metric_families(read.text) for s in f.samples]
    assert value(samples, "opus_database_up") == 1
    # an admin sees every definition, restricted ones too
    assert value(samples, "opus_jobs", jobdef="partners", phase="PENDING") == 0
    assert {"jobdef": "partners", "phase": "PENDING"} in series(samples, "opus_jobs")
    # counted in this process's memory (no metrics folder here)
    assert value(samples, "opus_http_requests_total", route="/metrics", status="403") >= 1

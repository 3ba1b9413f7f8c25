"""Jobs on real `opus worker` processes through a real Redis: load sharing, ABORT, limits,
a worker killed mid-job, Redis stopped and restarted, WAIT woken across processes, the
sweeps run without `opus beat` and handed over when their lease holder is killed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
import sqlalchemy

from opus.execution.celery_app import EPOCH_KEY, QUEUE, STRANDED_AFTER
from opus.execution.sweeps import LEASE
from opus.store import leases
from tests.servers import IN_CI, Server, free_port, opus_all
from tests.test_execution import (
    attempts,
    pid_alive,
    started_attempt,
    started_sleeper,
    wait_for,
    workers_of,
)

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
SHARED_REDIS = os.environ.get("OPUS_TEST_REDIS", "redis://127.0.0.1:6379/7")


def require_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis at {url} is required in CI: {exc}")
        pytest.skip(f"no Redis at {url}: {exc}")


class Cluster:
    """A web server and Celery workers sharing a broker and a database."""

    def __init__(self, start_server: Callable[..., Server], broker: str, tmp: Path) -> None:
        self.broker = broker
        self.server = start_server({"OPUS_BROKER_URL": broker, "OPUS_SWEEP_INTERVAL": "1"})
        self.workers: list[subprocess.Popen[bytes]] = []
        self.tmp = tmp

    def _spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"celery-{len(self.workers)}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "opus.cli", *args],
            env={**self.server.env, **(env or {})},
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(process)
        return process

    def worker(
        self, concurrency: int = 2, *options: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A worker with the server's settings, or these instead (a host of its own)."""
        return self._spawn("worker", "--concurrency", str(concurrency), *options, env=env)

    def beat(self) -> subprocess.Popen[bytes]:
        return self._spawn("beat")

    def stop(self) -> None:
        for process in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


@pytest.fixture
def cluster(
    start_server: Callable[..., Server], tmp_path: Path
) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(broker: str = SHARED_REDIS) -> Cluster:
        require_redis(broker)
        redis.Redis.from_url(broker).flushdb()
        made.append(Cluster(start_server, broker, tmp_path))
        return made[-1]

    yield make
    for each in made:
        each.stop()


def phase_of(doc: object) -> str:
    return str(doc.findtext(f"{UWS}phase"))  # type: ignore[attr-defined]


def test_two_workers_share_a_batch(cluster: Callable[..., Cluster]) -> None:
    running = cluster()
    running.worker(concurrency=1)
    running.worker(concurrency=1)
    urls = [
        running.server.create("sleeper", seconds="0.3", EXECUTIONDURATION="30") for _ in range(8)
    ]
    for url in urls:
        assert phase_of(running.server.wait_final(url, timeout=60)) == "COMPLETED"
    assert len({w.rpartition(":")[2] for w in workers_of(running.server, urls)}) == 2


def lease_holder(server: Server) -> str | None:
    """Who holds the sweeps' lease now (read as the store reads it: times typed)."""
    engine = sqlalchemy.create_engine(server.db_url)
    try:
        with engine.connect() as conn:
            return leases.holder_of(conn, LEASE, datetime.utcnow())
    finally:
        engine.dispose()


def test_without_beat_the_deployment_runs_the_sweeps(cluster: Callable[..., Cluster]) -> None:
    """No `opus beat`: the web server's sweeper or the worker holds the lease and sweeps."""
    running = cluster()
    running.worker(1)
    url = running.server.create("hello", name="swept")
    assert phase_of(running.server.wait_final(url)) == "COMPLETED"
    response = running.server.session.post(
        f"{url}/destruction", data={"DESTRUCTION": "2000-01-01T00:00:00Z"}, allow_redirects=False
    )
    assert response.status_code == 303
    wait_for(lambda: running.server.session.get(url).status_code == 404, 15, "the sweeps")
    holder = lease_holder(running.server)
    assert holder is not None and holder.rsplit(":", 1)[1] in ("web", "worker")
    # schedules too: their jobs go to the workers
    (made,) = opus_all(running.server, ["schedule", "add", "hello", "--every", "1s", "name=t"])
    assert made.returncode == 0, made.stderr
    schedule = json.loads(made.stdout)["id"]
    ticks = "SELECT count(*) FROM jobs WHERE schedule_id = :s AND phase = 'COMPLETED'"
    wait_for(lambda: running.server.scalar(ticks, {"s": schedule}) >= 2, 20, "two ticks' jobs")


def test_the_lease_holder_killed_another_process_sweeps(cluster: Callable[..., Cluster]) -> None:
    """Kill the process that runs the sweeps and the worker of a running job: another
    OPUS process takes the lease and ends that job in ERROR "worker lost"."""
    running = cluster()
    worker = running.worker(1)
    running.beat()
    wait_for(lambda: lease_holder(running.server) is not None, 15, "a holder of the lease")
    url, pid = started_sleeper(running.server)
    holder = str(lease_holder(running.server))
    holder_pid = int(holder.split(":")[1])
    try:
        os.kill(holder_pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # the job's worker, if it was not the holder
        start = time.monotonic()
        doc = running.server.wait_final(url, timeout=40)
        assert phase_of(doc) == "ERROR"
        assert "worker lost" in running.server.session.get(f"{url}/error").text
        assert time.monotonic() - start < 30
        successor = lease_holder(running.server)
        assert successor is not None and successor != holder
        assert pid_alive(int(successor.split(":")[1]))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_abort_stops_the_job_on_its_worker(cluster: Callable[..., Cluster]) -> None:
    running = cluster()
    running.worker()
    url, pid = started_sleeper(running.server)
    response = running.server.session.post(f"{url}/phase", data={"PHASE": "ABORT"})
    assert response.status_code == 200
    assert phase_of(running.server.wait_final(url)) == "ABORTED"
    wait_for(lambda: not pid_alive(pid), 5, "the aborted job's process to end")


def test_execution_duration_is_enforced_on_workers(cluster: Callable[..., Cluster]) -> None:
    running = cluster()
    running.worker()
    url = running.server.create("sleeper", seconds="30")  # the definition allows 2 s
    assert phase_of(running.server.wait_final(url, timeout=20)) == "ERROR"
    assert "execution duration of 2 s" in running.server.session.get(f"{url}/error").text


def test_a_killed_worker_loses_its_job_and_another_serves(
    cluster: Callable[..., Cluster],
) -> None:
    """The job ends in ERROR "worker lost", or runs again when its definition allows it."""
    running = cluster()
    doomed = running.worker(concurrency=2)
    url, pid = started_sleeper(running.server)
    retried, first = started_sleeper(running.server, seconds="2", jobdef="resilient")
    pids = [pid, first]
    try:
        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool, mid-job
        running.worker(concurrency=1)
        start = time.monotonic()
        doc = running.server.wait_final(url, timeout=40)
        assert phase_of(doc) == "ERROR"
        assert time.monotonic() - start < 30
        assert "worker lost" in running.server.session.get(f"{url}/error").text
        # the killed worker's jobs ran in sessions of their own: the new worker stops them
        wait_for(
            lambda: not pid_alive(pid) and not pid_alive(first),
            10,
            "the lost jobs' processes to be stopped",
        )

        pids.append(started_attempt(running.server, retried, 2))
        assert phase_of(running.server.wait_final(retried, timeout=30)) == "COMPLETED"
        assert attempts(running.server, retried) == 2
        assert workers_of(running.server, [retried]) != workers_of(running.server, [url])
        after = running.server.create("hello", name="survivor")
        assert phase_of(running.server.wait_final(after, timeout=30)) == "COMPLETED"
    finally:
        for each in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(each, signal.SIGKILL)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A redis-server of this test's own, on a free port, that it may stop and start."""
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is required in CI")
        pytest.skip("redis-server is not installed")
    port = free_port()
    process: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        process.append(
            subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        client = redis.Redis(port=port, socket_connect_timeout=1)
        wait_for(lambda: _pings(client), 10, "redis-server to answer")

    def stop() -> None:
        process[-1].terminate()
        process[-1].wait(10)

    start()
    yield f"redis://127.0.0.1:{port}/0", start, stop
    with contextlib.suppress(Exception):
        stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_down_loses_no_job_and_runs_none_twice(
    cluster: Callable[..., Cluster],
    private_redis: tuple[str, Callable[[], None], Callable[[], None]],
    tmp_path: Path,
) -> None:
    url_of_broker, start_redis, stop_redis = private_redis
    running = cluster(url_of_broker)
    running.worker()
    ledger = tmp_path / "ledger.txt"
    before = [
        running.server.create("tally", ledger=str(ledger), tag=f"before{i}") for i in range(3)
    ]
    for url in before:
        assert phase_of(running.server.wait_final(url, timeout=30)) == "COMPLETED"

    stop_redis()
    during = [
        running.server.create("tally", ledger=str(ledger), tag=f"during{i}") for i in range(3)
    ]
    assert [running.server.phase(u) for u in during] == ["QUEUED"] * 3
    availability = running.server.session.get(f"{running.server.url}/availability").text
    assert "broker unreachable" in availability

    start_redis()
    for url in during:
        assert phase_of(running.server.wait_final(url, timeout=60)) == "COMPLETED"
    lines = ledger.read_text().split()
    assert sorted(lines) == sorted(
        [f"before{i}" for i in range(3)] + [f"during{i}" for i in range(3)]
    )


def test_wait_is_woken_across_processes_quickly(cluster: Callable[..., Cluster]) -> None:
    running = cluster()
    running.worker()
    url, _ = started_sleeper(running.server, seconds="1")
    response = running.server.session.get(url, params={"WAIT": "30"})
    returned = datetime.utcnow()
    doc = __import__("lxml.etree").etree.fromstring(response.content)
    assert phase_of(doc) == "COMPLETED"
    ended = datetime.fromisoformat(doc.findtext(f"{UWS}endTime").rstrip("Z"))
    # the end time is written just before the commit that the notice follows
    assert (returned - ended).total_seconds() < 0.1


def test_jobs_queued_behind_a_killed_worker_run_elsewhere(
    cluster: Callable[..., Cluster],
) -> None:
    """A worker may hold messages it has not started (prefetched): killed, it loses none."""
    running = cluster()
    doomed = running.worker(concurrency=2)
    r = redis.Redis.from_url(running.broker)
    wait_for(lambda: bool(r.exists("opus:broker-epoch")), 20, "a first sweep")
    busy = [started_sleeper(running.server)[1] for _ in range(2)]
    queued = [running.server.create("hello", name=f"behind {i}") for i in range(3)]
    try:
        time.sleep(1)  # the doomed worker fetches what it may
        os.killpg(doomed.pid, signal.SIGKILL)
        running.worker(concurrency=1)
        for each in queued:
            assert phase_of(running.server.wait_final(each, timeout=40)) == "COMPLETED"
    finally:
        for pid in busy:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_a_job_whose_message_was_lost_is_sent_again(cluster: Callable[..., Cluster]) -> None:
    """A message gone from the broker (a worker killed between fetching and claiming it)
    leaves its job QUEUED only until the sweep sees the broker hold no job."""
    running = cluster()
    broker = redis.Redis.from_url(running.broker)
    broker.set(EPOCH_KEY, "kept")  # the broker did not restart: only this message is gone
    url = running.server.create("hello", name="stranded")
    wait_for(lambda: broker.llen(QUEUE) == 1, 5, "the job's message")
    broker.delete(QUEUE)
    running.worker(concurrency=1)
    start = time.monotonic()
    assert phase_of(running.server.wait_final(url, timeout=40)) == "COMPLETED"
    assert time.monotonic() - start < STRANDED_AFTER + 15
    assert attempts(running.server, url) == 1

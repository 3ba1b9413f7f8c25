"""Metrics for operators: the Prometheus text of `/metrics`.

Two kinds of numbers:

- counted where things happen, in the process they happen in: HTTP requests in the web
  workers, jobs started and ended in the runners. These are prometheus_client metrics in
  multiprocess mode: `opus serve` gives every process it starts one folder of this host
  (`Settings.metrics_dir`, as PROMETHEUS_MULTIPROC_DIR, emptied at start), each process
  writes its own file there, and a scrape adds the files up. A process started without the
  folder (the in-process tests, a Celery worker not given it) counts in its own memory.
- read from the store and the broker at scrape time, so that they are true whichever host
  runs what: jobs by definition and phase, the queue, the workers' heartbeats, whether the
  database and the broker answer. One GROUP BY each, never a query per job.

Names follow Prometheus' conventions (the `opus_` prefix, `_total` for counters, seconds),
and celery-exporter's where the two overlap (`_queue_length`, `_worker_up`, `_runtime_seconds`,
`queue_name`). Label values come from bounded sets: definitions, phases, route rules (never
raw paths), known methods.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from opus import __version__, config
from opus.auth import Caller, may_run
from opus.errors import Forbidden
from opus.jobdefs.registry import Registry
from opus.phases import ENDINGS, TRANSITIONS, Phase
from opus.store import jobs as store
from opus.store.db import Database
from opus.timeutil import utcnow

# the text format generate_latest writes (prometheus_client's CONTENT_TYPE_LATEST names a
# newer version of it in recent releases)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"  # the route of a request no route took (404, 405)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
BROKER_QUEUE = "opus"  # execution/celery_app.py QUEUE, the label of the broker's queue
# the phases a job of this server can be in: made PENDING (or QUEUED), moved by the named
# transitions, ended by a runner
REACHABLE = sorted(
    {str(Phase.PENDING), *map(str, ENDINGS), *(str(to) for _, to in TRANSITIONS.values() if to)}
)

log = logging.getLogger(__name__)

# -- counted where it happens -------------------------------------------------------------

# Not the global registry: in multiprocess mode a scrape reads the folder's files, and
# metrics registered where it also collects would be counted twice.
RECORDED = CollectorRegistry()

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# a job takes from a fraction of a second to hours
JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

HTTP_REQUESTS = Counter(
    "opus_http_requests_total",
    "HTTP requests answered, by route rule, method and status",
    ["route", "method", "status"],
    registry=RECORDED,
)
HTTP_DURATION = Histogram(
    "opus_http_request_duration_seconds",
    "Time to answer an HTTP request (a WAIT included), by route rule and method",
    ["route", "method"],
    buckets=HTTP_BUCKETS,
    registry=RECORDED,
)
HTTP_IN_PROGRESS = Gauge(
    "opus_http_requests_in_progress",
    "HTTP requests being answered now",
    multiprocess_mode="livesum",  # a worker that died answers none
    registry=RECORDED,
)
JOBS_ENDED = Counter(
    "opus_jobs_ended_total",
    "Jobs that ended, by definition and phase (COMPLETED, ERROR, ABORTED; a job aborted "
    "before it started too)",
    ["jobdef", "phase"],
    registry=RECORDED,
)
JOB_QUEUED = Histogram(
    "opus_job_queued_seconds",
    "Time from a job's creation to its start on a runner, by definition",
    ["jobdef"],
    buckets=JOB_BUCKETS,
    registry=RECORDED,
)
JOB_RUNTIME = Histogram(
    "opus_job_runtime_seconds",
    "Time from a job's start to its end, by definition",
    ["jobdef"],
    buckets=JOB_BUCKETS,
    registry=RECORDED,
)


def request_started() -> None:
    HTTP_IN_PROGRESS.inc()


def request_ended(route: str | None, method: str, status: int, seconds: float) -> None:
    """A request answered; `route` is the rule of the route that took it (None: none did)."""
    HTTP_IN_PROGRESS.dec()
    rule = route or UNMATCHED
    verb = method if method in METHODS else "other"
    HTTP_REQUESTS.labels(rule, verb, str(status)).inc()
    HTTP_DURATION.labels(rule, verb).observe(max(0.0, seconds))


def job_started(job: store.JobRecord) -> None:
    """A runner claimed the job (a retry is a second start)."""
    if job.start_time is not None:
        waited = (job.start_time - job.creation_time).total_seconds()
        JOB_QUEUED.labels(job.jobdef).observe(max(0.0, waited))


def job_ended(job: store.JobRecord, phase: str, now: datetime) -> None:
    """The job, started at job.start_time, ended in `phase` (counted once, by whoever ended it)."""
    JOBS_ENDED.labels(job.jobdef, phase).inc()
    if job.start_time is not None:
        JOB_RUNTIME.labels(job.jobdef).observe(max(0.0, (now - job.start_time).total_seconds()))


def serve_host(host: str, port: int) -> None:
    """Serve, in a thread, what this host's processes counted (jobs ended, their times) at
    http://host:port/metrics: for Prometheus to scrape a worker host of its own, whose
    counts no web server's /metrics holds (the gauges read from the store are there)."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    registry.register(counted())
    start_http_server(port, addr=host, registry=registry)


def counted() -> Collector:
    """What this host's processes counted: the files of the metrics folder in use, added
    up; this process's own counts where it has no folder."""
    folder = config.metrics_dir_in_use()
    if folder is None or not folder.is_dir():
        return RECORDED
    return MultiProcessCollector(None, path=str(folder))  # type: ignore[no-untyped-call]


def process_ended(pid: int) -> None:
    """A process that counted into this process's metrics folder has ended: its live
    gauges go with it (its counters stay: they are what it did)."""
    folder = config.metrics_dir_in_use()
    if folder is not None and folder.is_dir():
        mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


# -- read at scrape time ------------------------------------------------------------------


class Broker(Protocol):
    """What a scrape asks the dispatcher (execution/dispatch.py)."""

    def status(self) -> tuple[bool, str]: ...

    def queue_length(self) -> int | None: ...


_jobs = store.jobs
_BY_PHASE = select(_jobs.c.jobdef, _jobs.c.phase, func.count()).group_by(
    _jobs.c.jobdef, _jobs.c.phase
)
# A parent waiting for its children holds no runner (and has no heartbeat): not a worker.
_HEARTBEATS = (
    select(_jobs.c.worker, func.max(_jobs.c.heartbeat))
    .where(
        _jobs.c.phase == str(Phase.EXECUTING),
        _jobs.c.worker.is_not(None),
        _jobs.c.worker != store.WAITING_FOR_CHILDREN,
        _jobs.c.heartbeat.is_not(None),
    )
    .group_by(_jobs.c.worker)
)


DATABASE_UP = "Whether the database answers (1) or not (0)"


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _timestamp(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()


class StoreState:
    """The numbers read from the store and the broker when scraped."""

    def __init__(
        self,
        db: Database,
        registry: Registry,
        broker: Broker,
        celery: bool,
        silent_after: float,
    ) -> None:
        self.db = db
        self.registry = registry
        self.broker = broker
        self.celery = celery
        self.silent_after = silent_after

    def collect(self) -> Iterator[Metric]:
        info = _gauge("opus_build_info", "The OPUS version serving", ["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._store()
        up = self.broker.status()[0]
        if self.celery:
            yield self._one(
                "opus_broker_up", "Whether the Celery broker answers (1) or not (0)", up
            )
            length = self.broker.queue_length()
            if length is not None:
                queue = _gauge(
                    "opus_broker_queue_length",
                    "Job messages waiting in the broker's queue",
                    ["queue_name"],
                )
                queue.add_metric([BROKER_QUEUE], length)
                yield queue
        else:
            yield self._one(
                "opus_executor_up", "Whether the embedded executor answers (1) or not (0)", up
            )

    @staticmethod
    def _one(name: str, documentation: str, value: float) -> GaugeMetricFamily:
        family = _gauge(name, documentation)
        family.add_metric([], float(value))
        return family

    def _store(self) -> Iterator[Metric]:
        try:
            with self.db.read() as conn:
                counts = conn.execute(_BY_PHASE).all()
                beats = conn.execute(_HEARTBEATS).all()
        except SQLAlchemyError as exc:
            log.warning("metrics: database unavailable: %s", str(exc).splitlines()[0])
            yield self._one("opus_database_up", DATABASE_UP, 0)
            return
        yield self._one("opus_database_up", DATABASE_UP, 1)
        found = {(jobdef, phase): int(n) for jobdef, phase, n in counts}
        # every phase a job can reach, of every definition served (0 when none), so that
        # a series does not vanish when its last job leaves the phase
        jobdefs = sorted(set(self.registry.names()) | {jobdef for jobdef, _ in found})
        phases = sorted(set(REACHABLE) | {phase for _, phase in found})
        jobs = _gauge(
            "opus_jobs", "Jobs in the store, by definition and phase", ["jobdef", "phase"]
        )
        for jobdef in jobdefs:
            for phase in phases:
                jobs.add_metric([jobdef, phase], found.get((jobdef, phase), 0))
        yield jobs
        queued = sum(n for (_, phase), n in found.items() if phase == Phase.QUEUED)
        yield self._one(
            "opus_queue_length", "Jobs QUEUED in the store, waiting for a runner", queued
        )
        last = _gauge(
            "opus_worker_last_heartbeat_timestamp_seconds",
            "The latest heartbeat of the jobs each worker process (host:pid) is running",
            ["worker"],
        )
        alive = _gauge(
            "opus_worker_up",
            f"Whether each worker process running jobs has beaten in the last "
            f"{self.silent_after:g} s (1) or not (0)",
            ["worker"],
        )
        now = _timestamp(utcnow())
        for worker, beat in beats:
            seconds = _timestamp(beat)
            last.add_metric([worker], seconds)
            alive.add_metric([worker], 1 if now - seconds <= self.silent_after else 0)
        yield last
        yield alive


class _Visible:
    """The samples of `sources` a reader may see: with `jobdefs`, only those of these
    definitions among the samples labelled with one (the visibility rule on labels)."""

    def __init__(self, sources: list[Collector], jobdefs: frozenset[str] | None) -> None:
        self.sources = sources
        self.jobdefs = jobdefs

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            for family in source.collect():
                if self.jobdefs is not None:
                    family.samples = [
                        s
                        for s in family.samples
                        if "jobdef" not in s.labels or s.labels["jobdef"] in self.jobdefs
                    ]
                yield family


def check_may_read(caller: Caller) -> None:
    """Admins read the metrics; so does anyone where anonymous access is on (by default a
    server that listens on loopback only)."""
    if caller.admin or caller.anonymous_public:
        return
    who = f"{caller.name} is not an admin" if caller.name else "send an admin's token"
    raise Forbidden(f"the metrics are for admins: {who}")


class Exporter:
    """`/metrics`: what this host's processes counted, and what the store and the broker
    say now."""

    def __init__(self, state: StoreState) -> None:
        self.registry = state.registry
        self.state = state

    def text(self, caller: Caller) -> bytes:
        """The Prometheus text (CONTENT_TYPE) the caller may read; Forbidden if none."""
        check_may_read(caller)
        jobdefs = None
        if not caller.admin:
            served = self.registry.definitions.values()
            jobdefs = frozenset(d.name for d in served if may_run(caller, d))
        return generate_latest(_Visible([counted(), self.state], jobdefs))

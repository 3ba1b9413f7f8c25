"""Jobs on Celery workers (Redis broker): the same runner as the embedded executor.

`opus worker` runs the app that `make_celery` builds (none is built at import time);
each worker process runs jobs through runner.run_job, which claims the job (so a job
dispatched twice runs once), enforces its execution duration and ABORT, records its
provenance and marks it alive every few seconds. The sweeps (`sweep_tasks`, run by
whichever OPUS process holds their lease: execution/sweeps.py) dispatch QUEUED jobs that
never reached the broker, or whose messages a restarted Redis lost; end in ERROR the
EXECUTING jobs whose worker stopped beating (or queue them once more, if their
definition allows a retry); and destroy jobs past their destruction time.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready
from sqlalchemy.exc import OperationalError

from opus.config import Settings
from opus.execution import orphans, runner
from opus.execution.destruction import destruction_task
from opus.execution.redis_notify import RedisNotifier
from opus.execution.sweeps import RENEW, Task
from opus.jobdefs.registry import load_registry
from opus.phases import Phase
from opus.store import jobs as store
from opus.store.db import Database
from opus.timeutil import utcnow

log = logging.getLogger(__name__)

RUN_TASK = "opus.run_job"
QUEUE = "opus"
LOST_AFTER = 3 * runner.HEARTBEAT_INTERVAL  # a runner silent this long is gone
EPOCH_KEY = "opus:broker-epoch"  # absent after a Redis restart that lost its data
STRANDED_AFTER = 10.0  # seconds a job may stay QUEUED while the broker holds no job


def make_celery(settings: Settings) -> Celery:
    app = Celery("opus", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        task_default_queue=QUEUE,
        # A worker takes a job only when a process of its own is free: a job never waits
        # behind a long one while another worker idles, and a worker killed (SIGKILL) holds
        # no message it had not started.
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        task_acks_late=False,  # the store's claim, not the broker, makes a job run once
        task_time_limit=settings.max_execution_duration + 60,  # the runner stops jobs first
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "socket_timeout": 2,
            "socket_connect_timeout": 2,
            # No unacknowledged-message bookkeeping (two Redis transactions a job): with acks
            # early and no prefetch it only covered a message between its fetch and its start,
            # and kombu's fetch is not atomic with it anyway. The sweep sends again what the
            # broker no longer holds (STRANDED_AFTER); the runner's claim runs a job once.
            "ack_emulation": False,
        },
        worker_hijack_root_logger=False,
    )
    context: dict[int, runner.RunnerContext] = {}

    def runner_context() -> runner.RunnerContext:
        """One per worker process, made in that process (after Celery's fork)."""
        pid = os.getpid()
        if pid not in context:
            context.clear()
            context[pid] = celery_context(settings)
        return context[pid]

    @app.task(name=RUN_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def run_job(task: Any, job_id: str) -> None:
        try:
            runner.run_job(runner_context(), job_id)
        except OperationalError as exc:  # not claimed: the job is still QUEUED
            log.warning("job %s waits: database unavailable: %s", job_id, exc.orig)
            raise task.retry(countdown=2) from None

    return app


def celery_context(settings: Settings) -> runner.RunnerContext:
    return runner.RunnerContext(
        settings=settings,
        db=Database(settings.db_url),
        registry=load_registry(settings.jobdef_dirs),
        notifier=RedisNotifier(settings.broker_url),
    )


def sweep_tasks(settings: Settings, context: runner.RunnerContext, app: Celery) -> list[Task]:
    """What the sweeps do where jobs run on Celery workers."""
    sweeper = Sweeper(context, app)
    return [
        Task("redispatch", RENEW, sweeper.redispatch),
        Task("lost jobs", RENEW, sweeper.lost_jobs),
        destruction_task(settings, context.db, context.notifier),
    ]


class Sweeper:
    def __init__(self, context: runner.RunnerContext, app: Celery) -> None:
        self.context = context
        self.app = app
        self.redis = redis.Redis.from_url(context.settings.broker_url, socket_timeout=2)

    def redispatch(self) -> None:
        db = self.context.db
        with db.read() as conn:
            failed = store.undispatched(conn)
        queued = failed
        if self.redis.set(EPOCH_KEY, utcnow().isoformat(), nx=True):
            # Redis came back empty: the messages of QUEUED jobs may be gone with it.
            with db.read() as conn:
                queued = store.job_ids_in_phase(conn, Phase.QUEUED)
            if queued:
                log.warning("broker restarted empty: dispatching %d QUEUED jobs again", len(queued))
        elif self.redis.llen(QUEUE) == 0:
            # The broker holds no job, yet these have waited: their message was lost (a worker
            # killed between fetching and claiming it). A job sent twice still runs once.
            before = utcnow() - timedelta(seconds=STRANDED_AFTER)
            with db.read() as conn:
                stranded = store.job_ids_in_phase(conn, Phase.QUEUED, created_before=before)
            if stranded:
                log.warning("dispatching again %d QUEUED jobs the broker lost", len(stranded))
            queued = list(dict.fromkeys(failed + stranded))
        for job_id in queued:
            dispatch(self.app, db, job_id, failed_before=job_id in failed)

    def lost_jobs(self) -> None:
        db = self.context.db
        with db.read() as conn:
            lost = store.stale_executing(conn, utcnow() - timedelta(seconds=LOST_AFTER))
        for job_id, worker in lost:
            reason = f"worker lost: {worker or 'its worker'} stopped answering"
            if runner.lost_job(self.context, job_id, reason) == Phase.QUEUED:
                dispatch(self.app, db, job_id)
        runner.resume_parents(self.context)


def dispatch(app: Celery, db: Database, job_id: str, failed_before: bool = False) -> bool:
    """Send a job to the workers. If the broker cannot be reached the job stays QUEUED,
    marked for the sweep to send again. False if it was not sent."""
    try:
        app.send_task(RUN_TASK, args=[job_id], queue=QUEUE, retry=False)
    except Exception as exc:  # kombu and redis raise many kinds when the broker is away
        log.warning("job %s stays QUEUED: broker unreachable (%s)", job_id, exc)
        if not failed_before:
            with db.write() as conn:
                store.mark_dispatch_failed(conn, job_id, True)
        return False
    if failed_before:
        with db.write() as conn:
            store.mark_dispatch_failed(conn, job_id, False)
    return True


@worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
def _watch_orphans(**_kwargs: Any) -> None:
    """Each worker stops the processes of jobs whose runner died on its host: those of a
    pool process killed under it, or of a worker killed outright before it started."""
    orphans.watch()

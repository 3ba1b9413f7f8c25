"""Destroying jobs: their rows, their files, and a notice so that a runner stops them."""

from __future__ import annotations

import logging
import shutil

from opus.config import Settings
from opus.execution.notify import Notifier
from opus.execution.sweeps import Task
from opus.store import jobs as store
from opus.store.db import Database
from opus.store.objects import StoreUnavailable, storage_of
from opus.timeutil import utcnow

log = logging.getLogger(__name__)


def destroy_job(settings: Settings, db: Database, notifier: Notifier, job_id: str) -> None:
    """The job's rows, its objects in an object store (a store that does not answer keeps
    the job for the next sweep: StoreUnavailable), and its folders on this host."""
    storage = storage_of(settings)
    with db.write() as conn:
        keys = store.delete_job(conn, job_id)
        if storage.remote:
            storage.delete(keys)  # before the rows' deletion commits
    notifier.publish(job_id)  # a runner of this job sees it gone and stops it
    for folder in (settings.jobs_dir / job_id, settings.uploads_dir / job_id):
        shutil.rmtree(folder, ignore_errors=True)


def destroy_expired(settings: Settings, db: Database, notifier: Notifier) -> int:
    """Delete the jobs past their destruction time, with their files; how many."""
    with db.read() as conn:
        expired = store.expired_job_ids(conn, utcnow())
    destroyed = 0
    for job_id in expired:
        try:
            destroy_job(settings, db, notifier, job_id)
        except StoreUnavailable as exc:
            log.warning("job %s kept for the next sweep: object store unreachable: %s", job_id, exc)
            break
        destroyed += 1
    if destroyed:
        log.info("destroyed %d job(s) past their destruction time", destroyed)
    return destroyed


def destruction_task(settings: Settings, db: Database, notifier: Notifier) -> Task:
    """The sweeps' destruction of expired jobs, every OPUS_SWEEP_INTERVAL."""
    return Task(
        "destruction", settings.sweep_interval, lambda: destroy_expired(settings, db, notifier)
    )

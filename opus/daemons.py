"""The long-running processes of a deployment beside its web servers, and the sweeps
each of them competes to run (execution/sweeps.py: one at a time, by a lease).

- `python -m opus.daemons executor`: the embedded executor (`opus serve` without a
  broker), its sweeps joined by the schedules';
- `python -m opus.daemons sweeper`: the sweeps alone, beside a web server whose jobs go to
  Celery workers (`opus serve` with a broker starts it), and what `opus beat` runs;
- `start_in_worker`: the same sweeps in a thread of each `opus worker`.

The schedules' task makes jobs through the UWS service, which sits above execution: so
these entry points live here, at the top, not in opus.execution.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from opus.auth import Identities
from opus.config import Settings
from opus.execution import executor
from opus.execution.dispatch import make_dispatcher
from opus.execution.notify import make_notifier
from opus.execution.sweeps import Sweeps, Task
from opus.jobdefs.registry import load_registry
from opus.store.db import Database
from opus.uws.schedules import SHORTEST, ScheduleService
from opus.uws.service import JobService

log = logging.getLogger(__name__)


def job_service(settings: Settings, db: Database) -> JobService:
    """The UWS service of a process with no web server (its jobs dispatched as the
    server's are): the sweeps' schedules, `opus schedule`, `opus prov rerun`."""
    return JobService(
        settings,
        db,
        load_registry(settings.jobdef_dirs),
        make_dispatcher(settings, db),
        make_notifier(settings),
    )


def schedule_service(settings: Settings, db: Database) -> ScheduleService:
    return ScheduleService(job_service(settings, db), Identities(settings, db))


def schedule_task(settings: Settings) -> Task:
    """Make the jobs of the schedules that are due."""
    schedules = schedule_service(settings, Database(settings.db_url))
    return Task("schedules", SHORTEST, schedules.run_due)


def celery_sweeps(settings: Settings, kind: str) -> Sweeps:
    from opus.execution.celery_app import celery_context, make_celery, sweep_tasks

    context = celery_context(settings)
    tasks = sweep_tasks(settings, context, make_celery(settings))
    return Sweeps(context.db, kind, [*tasks, schedule_task(settings)])


def run_sweeper(settings: Settings, kind: str) -> None:
    """The sweeps in this process until SIGTERM or SIGINT."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    celery_sweeps(settings, kind).run_until(stop)


def start_in_worker(settings: Settings) -> threading.Event:
    """The sweeps in a daemon thread of a Celery worker's main process; set the event
    to stop them."""
    stop = threading.Event()
    sweeps = celery_sweeps(settings, "worker")
    threading.Thread(target=sweeps.run_until, args=(stop,), name="opus-sweeps", daemon=True).start()
    return stop


def main(argv: list[str]) -> None:
    settings = Settings()
    if argv == ["executor"]:
        executor.main(settings, [schedule_task(settings)])
    elif argv == ["sweeper"]:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s sweeper %(message)s")
        run_sweeper(settings, "web")
    else:
        sys.exit("usage: python -m opus.daemons executor|sweeper")


if __name__ == "__main__":
    main(sys.argv[1:])

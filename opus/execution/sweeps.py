"""The sweeps, run by whichever OPUS process holds their lease in the database.

Every long-running OPUS process (the embedded executor, a web server's sweeper beside
Celery workers, each `opus worker`, `opus beat`) runs a `Sweeps`: it tries to take or
renew the lease every `RENEW` seconds and, while it holds it, runs each task when it is
due. A deployment that runs OPUS at all so runs its sweeps, once at a time: a holder that
dies stops renewing, and another process takes the lease when it lapses (`LEASE_SECONDS`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from opus.store import leases
from opus.store.db import Database
from opus.timeutil import utcnow

log = logging.getLogger(__name__)

LEASE = "sweeps"
LEASE_SECONDS = 10.0  # a holder silent this long has lost the lease
RENEW = 2.0  # seconds between attempts to take or renew it


@dataclass(frozen=True)
class Task:
    name: str
    period: float  # seconds between runs, while this process holds the lease
    run: Callable[[], object]


def holder_name(kind: str) -> str:
    """Who a process is, in the lease: its host, its pid and what it is."""
    return f"{socket.gethostname()}:{os.getpid()}:{kind}"


class Sweeps:
    def __init__(self, db: Database, kind: str, tasks: Sequence[Task]) -> None:
        self.db = db
        self.holder = holder_name(kind)
        self.tasks = list(tasks)
        self.holding = False
        self._next_renew = 0.0
        self._next_run = {task.name: 0.0 for task in self.tasks}

    def tick(self) -> None:
        """Renew the lease when due, then run the due tasks if it is ours; never blocks
        longer than the tasks themselves (the embedded executor calls it in its loop)."""
        now = time.monotonic()
        if now >= self._next_renew:
            self._next_renew = now + RENEW
            self._renew()
        if not self.holding:
            return
        for task in self.tasks:
            if now >= self._next_run[task.name]:
                self._next_run[task.name] = now + task.period
                run_logged(f"sweep {task.name}", task.run)

    def _renew(self) -> None:
        was = self.holding
        try:
            with self.db.write() as conn:
                self.holding = leases.hold(conn, LEASE, self.holder, utcnow(), LEASE_SECONDS)
        except OperationalError as exc:
            log.warning("sweeps' lease not renewed: database unavailable: %s", exc.orig)
            self.holding = False
        if self.holding and not was:
            log.info("%s runs the sweeps", self.holder)
            self._next_run = dict.fromkeys(self._next_run, 0.0)

    def release(self) -> None:
        """Hand the lease over at once (a clean stop)."""
        if self.holding:
            self.holding = False
            try:
                with self.db.write() as conn:
                    leases.release(conn, LEASE, self.holder)
            except OperationalError:
                pass  # it lapses on its own

    def run_until(self, stop: threading.Event) -> None:
        """Tick until `stop` is set (a process or thread of its own), then release."""
        try:
            while not stop.is_set():
                self.tick()
                stop.wait(min(0.5, RENEW))
        finally:
            self.release()


def run_logged(what: str, work: Callable[[], object]) -> None:
    """Run periodic work whose failure must not stop the loop that runs it: a database
    away is a warning (the next round tries again), anything else is logged whole."""
    try:
        work()
    except OperationalError as exc:
        log.warning("%s: database unavailable: %s", what, exc.orig)
    except Exception:
        log.exception("%s failed", what)

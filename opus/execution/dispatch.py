"""How a QUEUED job reaches a runner: one interface, one implementation per executor.

The job's phase in the store is the truth: a dispatch that is lost (executor
down, broker unreachable) leaves the job QUEUED, and the executor's scan of
QUEUED jobs picks it up. The runner claims a job with a conditional update, so
a job dispatched twice still runs once.
"""

from __future__ import annotations

import errno
import socket
import time
from pathlib import Path
from typing import Protocol

from opus.config import Settings
from opus.extras import require
from opus.store.db import Database


class Dispatcher(Protocol):
    def submit(self, job_id: str) -> None:
        """Hand a QUEUED job to the executor; never raises for an unreachable executor."""

    def status(self) -> tuple[bool, str]:
        """Whether jobs are being taken now, and a note saying so."""

    def queue_length(self) -> int | None:
        """Jobs waiting in the broker (None: there is no broker, or it does not answer)."""


def executor_socket(settings: Settings) -> Path:
    return settings.run_dir / "executor.sock"


class EmbeddedDispatcher:
    """Sends job ids to the embedded executor process over a UNIX datagram socket."""

    def __init__(self, settings: Settings) -> None:
        self.path = str(executor_socket(settings))
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def _send(self, message: bytes) -> bool:
        try:
            self._socket.sendto(message, self.path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                return False
            raise
        return True

    def submit(self, job_id: str) -> None:
        self._send(b"run " + job_id.encode())

    def status(self) -> tuple[bool, str]:
        if self._send(b"ping"):
            return True, "embedded executor running"
        return False, "embedded executor not running: queued jobs wait for it"

    def queue_length(self) -> None:
        return None  # the executor's datagrams are no queue one can measure


class CeleryDispatcher:
    """Sends job ids to Celery workers through the broker (Redis)."""

    STATUS_TTL = 1.0  # seconds a broker check is reused (health checks can be frequent)

    def __init__(self, settings: Settings, db: Database) -> None:
        import redis  # the [celery] extra

        from opus.execution.celery_app import make_celery

        self.app = make_celery(settings)
        self.db = db
        self.redis = redis.Redis.from_url(
            settings.broker_url, socket_timeout=1, socket_connect_timeout=1
        )
        self._checked = (0.0, (False, ""))

    def submit(self, job_id: str) -> None:
        from opus.execution.celery_app import dispatch

        dispatch(self.app, self.db, job_id)

    def status(self) -> tuple[bool, str]:
        checked_at, answer = self._checked
        if time.monotonic() - checked_at < self.STATUS_TTL:
            return answer
        try:
            self.redis.ping()
            answer = (True, "Celery broker reachable")
        except Exception as exc:  # redis.RedisError and OSError: the broker is away
            answer = (False, f"Celery broker unreachable ({type(exc).__name__}): queued jobs wait")
        self._checked = (time.monotonic(), answer)
        return answer

    def queue_length(self) -> int | None:
        """The messages in the queue's Redis lists (kombu keeps one per priority step)."""
        from opus.execution.celery_app import QUEUE

        keys = [QUEUE, *(f"{QUEUE}\x06\x16{step}" for step in (3, 6, 9))]
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.llen(key)
                return sum(int(n) for n in pipe.execute())
        except Exception:  # redis.RedisError and OSError: the broker is away
            return None


def make_dispatcher(settings: Settings, db: Database) -> Dispatcher:
    if settings.broker_url:
        require("celery")
        return CeleryDispatcher(settings, db)
    return EmbeddedDispatcher(settings)

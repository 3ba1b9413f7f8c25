"""How a QUEUED job reaches a runner: one interface, one implementation per executor.

The job's phase in the store is the truth: a dispatch that is lost (executor
down, broker unreachable) leaves the job QUEUED, and the executor's scan of
QUEUED jobs picks it up. The runner claims a job with a conditional update, so
a job dispatched twice still runs once.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Protocol

from opus.config import Settings


class Dispatcher(Protocol):
    def submit(self, job_id: str) -> None:
        """Hand a QUEUED job to the executor; never raises for an unreachable executor."""

    def status(self) -> tuple[bool, str]:
        """Whether jobs are being taken now, and a note saying so."""


BROKER_NOT_YET = (
    "OPUS_BROKER_URL is set, but this version has only the embedded executor: unset OPUS_BROKER_URL"
)


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


def make_dispatcher(settings: Settings) -> Dispatcher:
    if settings.broker_url:
        raise ValueError(BROKER_NOT_YET)
    return EmbeddedDispatcher(settings)

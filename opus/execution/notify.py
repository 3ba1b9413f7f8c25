"""Phase-change notices between the processes of one server, for UWS WAIT.

Without a broker, every web process binds a UNIX datagram socket in the run
folder; a process that changes a job's phase sends the job id to each of them.
A socket whose process is gone refuses the datagram and is removed. Waiters
never rely on a notice alone: they re-read the phase at least every few seconds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from opus.config import Settings
from opus.extras import require

log = logging.getLogger(__name__)


class Notifier(Protocol):
    def publish(self, job_id: str) -> None: ...

    def listen(self, callback: Callable[[str], None]) -> None: ...


def make_notifier(settings: Settings) -> Notifier:
    """Redis pub/sub when jobs go through a broker (runners on other hosts), else sockets."""
    if not settings.broker_url:
        return SocketNotifier(settings.run_dir)
    require("redis")
    from opus.execution.redis_notify import RedisNotifier

    return RedisNotifier(settings.broker_url)


class SocketNotifier:
    def __init__(self, run_dir: Path) -> None:
        self.folder = run_dir / "wait"
        self._sender: socket.socket | None = None
        self._sender_pid = 0

    def _socket(self) -> socket.socket:
        if self._sender is None or self._sender_pid != os.getpid():
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
            self._sender_pid = os.getpid()
        return self._sender

    def publish(self, job_id: str) -> None:
        try:
            targets = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        data = job_id.encode()
        sender = self._socket()
        for entry in targets:
            try:
                sender.sendto(data, entry.path)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:  # its process is gone
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                elif exc.errno not in (errno.ENOENT, errno.EAGAIN):
                    log.warning("phase notice to %s failed: %s", entry.path, exc)

    def listen(self, callback: Callable[[str], None]) -> None:
        """Receive notices in a daemon thread (a greenlet under gevent) of this process."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{os.getpid()}-{secrets.token_hex(3)}.sock"
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(path))

        def loop() -> None:
            while True:
                try:
                    data = receiver.recv(256)
                except OSError as exc:
                    log.error("phase notice listener stopped: %s", exc)
                    return
                callback(data.decode(errors="replace"))

        threading.Thread(target=loop, name="opus-phase-notices", daemon=True).start()


class WaitHub:
    """The WAIT requests of one web process, woken by phase-change notices."""

    RECHECK = 5.0  # seconds: a lost notice delays a waiter by this much at most

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._events: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._started = False

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self._notifier.listen(self.wake)

    def wake(self, job_id: str) -> None:
        with self._lock:
            events = list(self._events.get(job_id, ()))
        for event in events:
            event.set()

    def wait(self, job_id: str, timeout: float, unchanged: Callable[[], bool]) -> None:
        """Block until a notice for job_id, or timeout, while `unchanged()` holds."""
        self._start()
        event = threading.Event()
        with self._lock:
            self._events.setdefault(job_id, set()).add(event)
        try:
            remaining = timeout
            while remaining > 0 and unchanged():
                step = min(remaining, self.RECHECK)
                if event.wait(step):
                    return
                remaining -= step
        finally:
            with self._lock:
                waiting = self._events.get(job_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._events[job_id]

"""The embedded executor: one process beside the web server that runs jobs.

It takes job ids from a UNIX datagram socket (sent by the web processes when a
job is queued) and, as a safety net, from a scan of QUEUED jobs in the store, so
a job queued while the executor was down runs when it comes back. Each job runs
in a process forked for it (a few ms; modules and definitions already loaded)
through the shared runner, at most `pool_size` at a time. A runner that dies
takes only its own job down: the job ends in ERROR saying so. Periodically the
executor also destroys jobs past their destruction time.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import signal
import socket
import time
from typing import Any

from opus.config import Settings
from opus.execution import runner
from opus.execution.dispatch import executor_socket
from opus.execution.notify import SocketNotifier
from opus.jobdefs.registry import Registry, load_registry
from opus.store import jobs as store
from opus.store.db import Database
from opus.timeutil import utcnow
from opus.uws.destruction import destroy_expired

log = logging.getLogger(__name__)

SCAN_INTERVAL = 1.0
ORPHAN_INTERVAL = 5.0
STOP_GRACE = 10.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_child(settings: Settings, registry: Registry, job_id: str) -> None:
    """In the forked process: run the job, then leave without running any parent cleanup."""
    code = 1
    try:

        def on_sigterm(_signum: int, _frame: Any) -> None:
            raise runner.Shutdown()

        signal.signal(signal.SIGTERM, on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        context = runner.RunnerContext(
            settings=settings,
            db=Database(settings.db_url),  # never the parent's connections
            registry=registry,
            notifier=SocketNotifier(settings.run_dir),
        )
        runner.run_job(context, job_id)
        code = 0
    except BaseException:
        log.exception("runner of job %s stopped", job_id)
    finally:
        os._exit(code)


class Executor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.db_url)
        self.registry = load_registry(settings.jobdef_dirs)
        self.notifier = SocketNotifier(settings.run_dir)
        self.host = socket.gethostname()
        self.running: dict[int, str] = {}  # runner pid -> job id
        self.waiting: collections.deque[str] = collections.deque()
        self.stopping = False

    def submit(self, job_id: str) -> None:
        if job_id in self.waiting or job_id in self.running.values():
            return
        self.waiting.append(job_id)

    def start_waiting(self) -> None:
        while self.waiting and len(self.running) < self.settings.pool_size:
            job_id = self.waiting.popleft()
            pid = os.fork()
            if pid == 0:
                _run_child(self.settings, self.registry, job_id)
            self.running[pid] = job_id

    def reap(self) -> None:
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job_id = self.running.pop(pid, None)
            if job_id is not None and status != 0:
                self.fail_if_executing(job_id, f"{self.host}:{pid}")

    def fail_if_executing(self, job_id: str, worker: str) -> None:
        with self.db.write() as conn:
            moved = store.change_phase(
                conn,
                job_id,
                "ERROR",
                ["EXECUTING"],
                end_time=utcnow(),
                error_type="transient",
                error_message=f"the process running the job ({worker}) died",
            )
        if moved:
            log.warning("job %s: its runner %s died; the job ended in ERROR", job_id, worker)
            self.notifier.publish(job_id)

    def scan_queued(self) -> None:
        with self.db.read() as conn:
            queued = store.job_ids_in_phase(conn, "QUEUED")
        for job_id in queued:
            self.submit(job_id)

    def end_orphans(self) -> None:
        """EXECUTING jobs of this host whose runner process is gone end in ERROR."""
        with self.db.read() as conn:
            executing = store.executing_on(conn, self.host + ":")
        for job_id, worker in executing:
            pid_text = worker.rpartition(":")[2]
            if pid_text.isdigit() and _pid_alive(int(pid_text)):
                continue
            self.fail_if_executing(job_id, worker or "unknown")

    def sweep(self) -> None:
        destroy_expired(self.settings, self.db, self.notifier)

    def serve(self) -> None:
        path = executor_socket(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.setblocking(False)
        # A child's exit wakes the loop at once, so that a waiting job starts without delay.
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        log.info(
            "embedded executor: up to %d jobs at once, socket %s", self.settings.pool_size, path
        )
        next_scan = next_orphans = next_sweep = 0.0
        try:
            while not self.stopping:
                now = time.monotonic()
                if now >= next_orphans:
                    self._periodic(self.end_orphans)
                    next_orphans = now + ORPHAN_INTERVAL
                if now >= next_scan:
                    self._periodic(self.scan_queued)
                    next_scan = now + SCAN_INTERVAL
                if now >= next_sweep:
                    self._periodic(self.sweep)
                    next_sweep = now + self.settings.sweep_interval
                self.reap()
                self.start_waiting()
                ready, _, _ = select.select([sock, wake_read], [], [], 0.5)
                if wake_read in ready:
                    with contextlib.suppress(BlockingIOError):
                        wake_read.recv(4096)
                if sock in ready:
                    self._read_messages(sock)
        finally:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._stop_children()

    def _read_messages(self, sock: socket.socket) -> None:
        while True:
            try:
                message = sock.recv(256).decode(errors="replace")
            except BlockingIOError:
                return
            verb, _, job_id = message.partition(" ")
            if verb == "run" and job_id:
                self.submit(job_id)

    def _stop_children(self) -> None:
        """SIGTERM each runner (its job ends in ERROR, saying why), then wait for them."""
        for pid in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE
        while self.running and time.monotonic() < end:
            self.reap()
            time.sleep(0.05)
        for pid in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _periodic(task: Any) -> None:
        try:
            task()
        except Exception:
            log.exception("executor task %s failed", getattr(task, "__name__", task))


def main() -> None:
    """The executor process, started by `opus serve` with the same OPUS_* environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s executor %(levelname)s %(message)s")
    executor = Executor(Settings())

    def stop(_signum: int, _frame: Any) -> None:
        executor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    executor.serve()


if __name__ == "__main__":
    main()

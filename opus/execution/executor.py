"""The embedded executor: one process beside the web server that runs jobs in a pool.

It takes job ids from a UNIX datagram socket (sent by the web processes when a
job is queued) and, as a safety net, from a scan of QUEUED jobs in the store, so
a job queued while the executor was down runs when it comes back. Each job runs
in a pool process through the shared runner. Periodically it also ends in ERROR
the jobs whose runner process died, and destroys jobs past their destruction time.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.pool import Pool
from typing import Any

from opus.config import Settings
from opus.execution import runner
from opus.execution.dispatch import executor_socket
from opus.execution.notify import SocketNotifier
from opus.jobdefs.registry import load_registry
from opus.store import jobs as store
from opus.store.db import Database
from opus.timeutil import utcnow
from opus.uws.destruction import destroy_expired

log = logging.getLogger(__name__)

SCAN_INTERVAL = 1.0
ORPHAN_INTERVAL = 5.0

_context: runner.RunnerContext | None = None
_running = False


def _on_sigterm(_signum: int, _frame: Any) -> None:
    if _running:
        raise runner.Shutdown()
    raise SystemExit(0)


def _init_pool_process(settings_data: dict[str, Any]) -> None:
    global _context
    settings = Settings.model_validate(settings_data)
    _context = runner.RunnerContext(
        settings=settings,
        db=Database(settings.db_url),
        registry=load_registry(settings.jobdef_dirs),
        notifier=SocketNotifier(settings.run_dir),
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_in_pool(job_id: str) -> str | None:
    global _running
    assert _context is not None
    _running = True
    try:
        return runner.run_job(_context, job_id)
    finally:
        _running = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Executor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.db_url)
        self.notifier = SocketNotifier(settings.run_dir)
        self.host = socket.gethostname()
        self.inflight: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = False
        self.pool: Pool | None = None

    def submit(self, job_id: str) -> None:
        assert self.pool is not None
        with self.lock:
            if job_id in self.inflight:
                return
            self.inflight.add(job_id)

        def done(_result: object) -> None:
            with self.lock:
                self.inflight.discard(job_id)

        self.pool.apply_async(_run_in_pool, (job_id,), callback=done, error_callback=done)

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
            with self.db.write() as conn:
                moved = store.change_phase(
                    conn,
                    job_id,
                    "ERROR",
                    ["EXECUTING"],
                    end_time=utcnow(),
                    error_type="transient",
                    error_message=f"the process running the job ({worker or 'unknown'}) died",
                )
            if moved:
                log.warning("job %s: its runner %s died; job ended in ERROR", job_id, worker)
                self.notifier.publish(job_id)

    def sweep(self) -> None:
        destroy_expired(self.settings, self.db, self.notifier)

    def serve(self) -> None:
        path = executor_socket(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(0.5)
        spawn = multiprocessing.get_context("spawn")
        self.pool = spawn.Pool(
            self.settings.pool_size, _init_pool_process, (self.settings.model_dump(),)
        )
        log.info("embedded executor: %d processes, socket %s", self.settings.pool_size, path)
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
                try:
                    message = sock.recv(256).decode(errors="replace")
                except (TimeoutError, InterruptedError):
                    continue
                verb, _, job_id = message.partition(" ")
                if verb == "run" and job_id:
                    self.submit(job_id)
        finally:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.pool.terminate()  # SIGTERM: running jobs end in ERROR, saying why
            self.pool.join()

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

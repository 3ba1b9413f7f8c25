"""The embedded executor: one process beside the web server that runs jobs.

It takes job ids from a UNIX datagram socket (sent by the web processes when a
job is queued) and, as a safety net, from a scan of QUEUED jobs in the store, so
a job queued while the executor was down runs when it comes back. Jobs run in
`pool_size` runner processes forked at start (warm: modules, definitions and
compiled queries stay loaded between jobs), one job at a time each, fed through
a socket pair of their own (no lock shared between processes, so a runner killed
at any moment cannot jam the others). A runner that dies takes only its own job
down: the job ends in ERROR saying so (or runs once more, if its definition allows
a retry), and a new runner takes its place.
It also runs the sweeps (destruction, parents whose children ended unnoticed, and the
tasks it is given, such as schedules) while it holds their lease: execution/sweeps.py.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError

from opus import metrics
from opus.config import Settings
from opus.execution import orphans, runner
from opus.execution.destruction import destruction_task
from opus.execution.dispatch import executor_socket
from opus.execution.notify import SocketNotifier
from opus.execution.sweeps import Sweeps, Task, run_logged
from opus.jobdefs.registry import load_registry
from opus.phases import Phase
from opus.store import jobs as store
from opus.store.db import Database

log = logging.getLogger(__name__)

SCAN_INTERVAL = 1.0
ORPHAN_INTERVAL = 5.0
STOP_GRACE = 10.0


@dataclass
class Runner:
    pid: int
    channel: socket.socket  # the executor's end of the pair
    job: str | None = None
    process_group: int | None = None  # of the job's process, while it runs


def _runner_main(context: runner.RunnerContext, channel: socket.socket) -> None:
    """In a forked runner: run the jobs the executor sends, one at a time, until told to stop."""
    busy = False

    def on_sigterm(_signum: int, _frame: Any) -> None:
        if not busy:
            os._exit(0)
        # The job ends in ERROR, saying the server shut down. One SIGTERM is enough: a second
        # (the whole process group gets one, then the executor sends its own) must not cut
        # short the killing of the job's processes or the recording of its end.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise runner.Shutdown()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    context.db.engine.dispose(close=False)  # new connections; the parent keeps its own
    context = dataclasses.replace(
        context, on_process_started=lambda pgid: channel.sendall(b"pg %d" % pgid)
    )
    while True:
        job_id = channel.recv(256).decode()
        if not job_id:
            return  # the executor is gone
        busy = True
        try:
            runner.run_job(context, job_id)
        except OperationalError as exc:  # not claimed: the job stays QUEUED for the next scan
            log.warning("job %s waits: database unavailable: %s", job_id, exc.orig)
        finally:
            busy = False
        channel.sendall(b"done")


class Executor:
    def __init__(self, settings: Settings, tasks: Sequence[Task] = ()) -> None:
        self.settings = settings
        self.db = Database(settings.db_url)
        self.context = runner.RunnerContext(
            settings, self.db, load_registry(settings.jobdef_dirs), SocketNotifier(settings.run_dir)
        )
        self.host = socket.gethostname()
        self.runners: dict[int, Runner] = {}
        self.waiting: collections.deque[str] = collections.deque()
        self.stopping = False
        self.sweeps = Sweeps(self.db, "executor", [*self.sweep_tasks(), *tasks])

    def sweep_tasks(self) -> list[Task]:
        return [
            destruction_task(self.settings, self.db, self.context.notifier),
            Task(
                "parents", self.settings.sweep_interval, lambda: runner.resume_parents(self.context)
            ),
        ]

    def spawn_runner(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ours.close()
                _runner_main(self.context, theirs)
                code = 0
            except runner.Shutdown:
                code = 0  # its job was ended, saying why
            except BaseException:
                log.exception("runner process stopped")
            finally:
                os._exit(code)
        theirs.close()
        self.runners[pid] = Runner(pid, ours)

    def submit(self, job_id: str) -> None:
        if job_id in self.waiting or any(r.job == job_id for r in self.runners.values()):
            return
        self.waiting.append(job_id)

    def start_waiting(self) -> None:
        for worker in self.runners.values():
            if not self.waiting:
                return
            if worker.job is None:
                worker.job = self.waiting.popleft()
                worker.channel.sendall(worker.job.encode())

    def reap(self) -> None:
        """Collect dead runners: fail the job each held, and replace them."""
        while self.runners:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.runners.pop(pid, None)
            if worker is None:
                continue
            metrics.process_ended(pid)
            worker.channel.close()
            if worker.process_group is not None:  # the job's processes die with their runner
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(worker.process_group, signal.SIGKILL)
            if worker.job is not None:
                self.lost(worker.job, f"{self.host}:{pid}")
            if not self.stopping:
                self.spawn_runner()

    def lost(self, job_id: str, worker: str) -> None:
        reason = f"the process running the job ({worker}) died"
        if runner.lost_job(self.context, job_id, reason) == Phase.QUEUED:
            self.submit(job_id)

    def scan_queued(self) -> None:
        with self.db.read() as conn:
            queued = store.job_ids_in_phase(conn, Phase.QUEUED)
        for job_id in queued:
            self.submit(job_id)

    def end_orphans(self) -> None:
        """EXECUTING jobs of this host whose runner process is gone: retried or ended; and
        the processes of jobs whose runner is gone (a server killed outright left them)."""
        orphans.stop_orphans()
        with self.db.read() as conn:
            executing = store.executing_on(conn, self.host + ":")
        for job_id, worker in executing:
            pid_text = worker.rpartition(":")[2]
            if pid_text.isdigit() and orphans.alive(int(pid_text)):
                continue
            self.lost(job_id, worker or "unknown")

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
        for _ in range(self.settings.pool_size):
            self.spawn_runner()
        log.info("embedded executor: %d runners, socket %s", self.settings.pool_size, path)
        next_scan = next_orphans = 0.0
        try:
            while not self.stopping:
                now = time.monotonic()
                if now >= next_orphans:
                    run_logged("executor task end_orphans", self.end_orphans)
                    next_orphans = now + ORPHAN_INTERVAL
                if now >= next_scan:
                    run_logged("executor task scan_queued", self.scan_queued)
                    next_scan = now + SCAN_INTERVAL
                self.sweeps.tick()
                self.reap()
                self.start_waiting()
                channels = {r.channel: r for r in self.runners.values()}
                ready, _, _ = select.select([sock, wake_read, *channels], [], [], 0.5)
                for channel in ready:
                    if channel in channels:
                        self._runner_message(channels[channel])
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
            self.sweeps.release()

    def _read_messages(self, sock: socket.socket) -> None:
        while True:
            try:
                message = sock.recv(256).decode(errors="replace")
            except BlockingIOError:
                return
            verb, _, job_id = message.partition(" ")
            if verb == "run" and job_id:
                self.submit(job_id)

    @staticmethod
    def _runner_message(worker: Runner) -> None:
        try:
            message = worker.channel.recv(64)
        except OSError:
            message = b""
        if message == b"done":
            worker.job = worker.process_group = None
        elif message.startswith(b"pg "):
            worker.process_group = int(message[3:])
        # b"": the runner is gone; reap() sees it and fails its job

    def _stop_children(self) -> None:
        """SIGTERM each runner (a running job ends in ERROR, saying why), then wait."""
        self.stopping = True
        for pid in self.runners:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE
        while self.runners and time.monotonic() < end:
            self.reap()
            time.sleep(0.05)
        for pid in self.runners:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def main(settings: Settings, tasks: Sequence[Task] = ()) -> None:
    """The executor process, started by `opus serve` (opus.daemons) with the same OPUS_*
    environment; `tasks` join its sweeps."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s executor %(levelname)s %(message)s")
    executor = Executor(settings, tasks)

    def stop(_signum: int, _frame: Any) -> None:
        executor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    executor.serve()

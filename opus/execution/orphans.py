"""Stopping the processes of jobs whose runner is gone.

A job's processes run in a session of their own, so that ABORT and the time limit
reach all of them; for the same reason they do not die with the process running the
job. Each carries that runner's pid in its environment (RUNNER_PID). Whatever watches
a host's jobs (every Celery worker, the embedded executor) looks every few seconds
for processes whose runner no longer exists and kills them: a worker or server
killed outright leaves no computation behind once an OPUS process runs on its host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

RUNNER_PID = "OPUS_RUNNER_PID"  # OPUS_ names are refused to parameters
WATCH_INTERVAL = 5.0  # seconds
_MARK = RUNNER_PID.encode() + b"="


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this host; a zombie (dead, not yet collected) does not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _runner_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            variables = environ.read().split(b"\0")
    except OSError:  # gone, or not ours to read
        return None
    for variable in variables:
        if variable.startswith(_MARK):
            value = variable[len(_MARK) :]
            return int(value) if value.isdigit() else None
    return None


def stop_orphans() -> list[int]:
    """Kill (SIGKILL) every process this one can see whose job's runner is gone, and its
    process group; the pids killed."""
    killed = []
    own_group = os.getpgid(0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        runner = _runner_of(pid)
        if runner is None or alive(runner):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    if killed:
        log.warning("stopped %d processes of jobs whose runner had died", len(killed))
    return killed


def watch() -> None:
    """Stop orphans now and every WATCH_INTERVAL, in a thread of this process."""

    def loop() -> None:
        while True:
            try:
                stop_orphans()
            except OSError as exc:  # /proc unreadable: nothing to watch here
                log.warning("cannot look for orphaned job processes: %s", exc)
                return
            time.sleep(WATCH_INTERVAL)

    threading.Thread(target=loop, name="opus-orphans", daemon=True).start()

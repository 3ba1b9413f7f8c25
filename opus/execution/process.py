"""A job's process: started in a session of its own, supervised, stopped with all it began.

ABORT, the execution-duration limit and a shutdown stop the whole process group.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from opus.execution.failures import JobFailure

CHECK_INTERVAL = 0.2  # seconds between checks for ABORT while a job runs
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL


def run_process(
    argv: list[str],
    env: dict[str, str],
    workdir: Path,
    root: Path,
    deadline: float,
    still_wanted: Callable[[], bool],
    on_started: Callable[[int], None] | None = None,
) -> str:
    """Run the job's process in a session of its own, its output in root/std*.log.

    `still_wanted()` is asked every CHECK_INTERVAL while it runs (False: it was aborted);
    `on_started` is told its pid, which is also its process group.
    Returns 'exited', 'aborted' or 'timeout'; raises JobFailure for a failed process."""
    with (root / "stdout.log").open("wb") as out, (root / "stderr.log").open("wb") as err:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise JobFailure(f"could not start {argv[0]}: {exc}") from None
    if on_started is not None:
        on_started(proc.pid)
    try:
        outcome = _supervise(proc, deadline, still_wanted)
    finally:
        kill_group(proc)
    if outcome != "exited":
        return outcome
    if proc.returncode != 0:
        reason = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        tail = _tail(root / "stderr.log")
        raise JobFailure(f"the job's process {reason}" + (f": {tail}" if tail else ""))
    return outcome


def _supervise(
    proc: subprocess.Popen[bytes], deadline: float, still_wanted: Callable[[], bool]
) -> str:
    pidfd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if poller.poll(max(0.0, min(CHECK_INTERVAL, left)) * 1000):
                proc.wait()
                return "exited"
            if time.monotonic() >= deadline:
                return "timeout"
            if not still_wanted():
                return "aborted"
    finally:
        os.close(pidfd)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the job's process and everything it started (its process group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(KILL_GRACE)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_GRACE)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()

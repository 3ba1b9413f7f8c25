"""The embedded executor: ABORT, time limits, restarts, dead runners, destruction sweep."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import sqlalchemy

from tests.servers import Server

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"


def job_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def started_sleeper(
    server: Server, seconds: str = "30", jobdef: str = "sleeper"
) -> tuple[str, int]:
    """A sleeper job that is EXECUTING, and the pid of its script."""
    url = server.create(jobdef, seconds=seconds, EXECUTIONDURATION="60")
    pid = started_attempt(server, url)
    assert server.phase(url) == "EXECUTING"
    return url, pid


def started_attempt(server: Server, url: str, attempt: int = 1) -> int:
    """The pid of the script of the job's `attempt`-th run, once it has started."""
    folder = server.data_dir / "jobs" / job_id(url)
    pid_file = (folder if attempt == 1 else folder / f"attempt{attempt}") / "work" / "pid.txt"

    def started() -> bool:
        return pid_file.exists() and pid_file.read_text().strip() != ""

    wait_for(started, 30, f"run {attempt} of the job to start")
    return int(pid_file.read_text())


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1])


def job_column(server: Server, urls: list[str], column: str) -> list[Any]:
    """A column of the jobs table, for what no request shows (which worker, which attempt)."""
    engine = sqlalchemy.create_engine(server.db_url)
    try:
        with engine.connect() as conn:
            query = sqlalchemy.text(f"SELECT {column} FROM jobs WHERE id IN :ids").bindparams(
                sqlalchemy.bindparam("ids", expanding=True)
            )
            return [row[0] for row in conn.execute(query, {"ids": [job_id(u) for u in urls]})]
    finally:
        engine.dispose()


def attempts(server: Server, url: str) -> int:
    return int(job_column(server, [url], "attempts")[0])


def workers_of(server: Server, urls: list[str]) -> set[str]:
    return set(job_column(server, urls, "worker"))


def error_message(server: Server, url: str) -> str:
    return server.session.get(f"{url}/error").text


def test_abort_stops_the_running_process(server: Server) -> None:
    url, pid = started_sleeper(server)
    response = server.session.post(f"{url}/phase", data={"PHASE": "ABORT"}, allow_redirects=False)
    assert response.status_code == 303
    assert server.phase(url) == "ABORTED"
    wait_for(lambda: not pid_alive(pid), 5, "the aborted job's process to end")
    doc = server.wait_final(url)
    assert doc.find(f"{UWS}results/{UWS}result") is None
    assert not (server.data_dir / "jobs" / job_id(url) / "work" / "done.txt").exists()


def test_execution_duration_is_enforced(server: Server) -> None:
    url = server.create("sleeper", seconds="30")  # the definition allows 2 s
    assert server.session.get(f"{url}/executionduration").text == "2"
    start = time.monotonic()
    doc = server.wait_final(url)
    assert doc.findtext(f"{UWS}phase") == "ERROR"
    assert time.monotonic() - start < 8
    assert "ran past its execution duration of 2 s" in error_message(server, url)
    pid = int((server.data_dir / "jobs" / job_id(url) / "work" / "pid.txt").read_text())
    assert not pid_alive(pid)


def test_queued_jobs_run_after_a_restart(start_server: Callable[..., Server]) -> None:
    first = start_server()
    executor = executor_pid(first)
    os.kill(executor, signal.SIGKILL)
    wait_for(lambda: not pid_alive(executor), 5, "the executor to die")
    queued = [first.create("hello", name=f"r{i}") for i in range(3)]
    time.sleep(1.5)
    assert [first.phase(u) for u in queued] == ["QUEUED"] * 3
    availability = first.session.get(f"{first.url}/availability").text
    assert "executor not running" in availability
    first.stop()

    second = start_server(data_dir=first.data_dir)
    for old_url in queued:
        url = old_url.replace(first.url, second.url)
        doc = second.wait_final(url)
        assert doc.findtext(f"{UWS}phase") == "COMPLETED"


def test_job_of_a_dead_server_ends_in_error(start_server: Callable[..., Server]) -> None:
    first = start_server()
    url, pid = started_sleeper(first)
    first.stop(signal.SIGKILL)  # the whole process group: web, executor, pool
    try:
        second = start_server(data_dir=first.data_dir)
        url = url.replace(first.url, second.url)
        doc = second.wait_final(url, timeout=15)
        assert doc.findtext(f"{UWS}phase") == "ERROR"
        assert "died" in error_message(second, url)
        # the job's process, in a session of its own, outlived its runner: the new server
        # stops it
        wait_for(lambda: not pid_alive(pid), 10, "the orphaned job's process to be stopped")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_runner_killed_mid_job_ends_in_error_and_others_still_run(server: Server) -> None:
    url, pid = started_sleeper(server)
    runner = parent_of(pid)
    assert f":{runner}" in workers_of(server, [url]).pop()  # jobs name the runner process
    os.kill(runner, signal.SIGKILL)
    try:
        doc = server.wait_final(url, timeout=15)
        assert doc.findtext(f"{UWS}phase") == "ERROR"
        assert "died" in error_message(server, url)
        wait_for(lambda: not pid_alive(pid), 5, "the job's process to die with its runner")
        other = server.wait_final(server.create("hello", name="after"))
        assert other.findtext(f"{UWS}phase") == "COMPLETED"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_runner_killed_mid_job_runs_it_once_more_if_its_definition_allows(
    server: Server,
) -> None:
    again, second = started_sleeper(server, seconds="30", jobdef="resilient")
    url, first = started_sleeper(server, seconds="2", jobdef="resilient")
    pids = [first, second]
    try:
        os.kill(parent_of(first), signal.SIGKILL)
        doc = server.wait_final(url, timeout=30)
        assert doc.findtext(f"{UWS}phase") == "COMPLETED"
        assert attempts(server, url) == 2
        assert server.session.get(f"{url}/results/done").text == "slept\n"
        assert started_attempt(server, url, 2) != first

        # a job retried once and lost again ends in ERROR
        os.kill(parent_of(second), signal.SIGKILL)
        pids.append(started_attempt(server, again, 2))
        os.kill(parent_of(pids[-1]), signal.SIGKILL)
        assert server.wait_final(again, timeout=15).findtext(f"{UWS}phase") == "ERROR"
        assert "died; it had been retried once" in error_message(server, again)
        assert attempts(server, again) == 2
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_shutdown_ends_running_jobs_in_error(start_server: Callable[..., Server]) -> None:
    first = start_server()
    url, pid = started_sleeper(first)
    runner = parent_of(pid)
    os.killpg(first.process.pid, signal.SIGTERM)
    # More SIGTERMs while the runner ends the job (an impatient operator, or the executor's
    # own after the group's) must not cut short the killing of its processes or its ERROR.
    end = time.monotonic() + 0.5
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < end:
            os.kill(runner, signal.SIGTERM)
            time.sleep(0.005)
    first.stop(signal.SIGTERM)
    wait_for(lambda: not pid_alive(pid), 10, "the job's process to be stopped")
    second = start_server(data_dir=first.data_dir)
    url = url.replace(first.url, second.url)
    assert second.phase(url) == "ERROR"
    assert "shut down" in error_message(second, url)


def test_jobs_past_destruction_are_deleted(start_server: Callable[..., Server]) -> None:
    server = start_server({"OPUS_SWEEP_INTERVAL": "0.5"})
    url = server.create("hello", name="short-lived")
    server.wait_final(url)
    folder = server.data_dir / "jobs" / job_id(url)
    assert folder.is_dir()
    past = "2000-01-01T00:00:00Z"
    response = server.session.post(
        f"{url}/destruction", data={"DESTRUCTION": past}, allow_redirects=False
    )
    assert response.status_code == 303
    wait_for(lambda: requests.get(url).status_code == 404, 10, "the sweep")
    assert not folder.exists()


def executor_pid(server: Server) -> int:
    """The embedded executor: the child `opus serve` started for it."""
    out = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(server.process.pid)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pids = [int(line.split()[0]) for line in out.splitlines() if "opus.daemons executor" in line]
    assert len(pids) == 1, out
    return pids[0]

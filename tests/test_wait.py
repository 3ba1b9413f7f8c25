"""UWS 1.1 blocking GET (WAIT, PHASE) against a running server."""

from __future__ import annotations

import threading
import time

import requests
from lxml import etree

from tests.servers import Server

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"


def timed_get(url: str, **params: str) -> tuple[float, str]:
    start = time.monotonic()
    response = requests.get(url, params=params, timeout=120)
    assert response.status_code == 200, response.text
    phase = etree.fromstring(response.content).findtext(f"{UWS}phase")
    return time.monotonic() - start, str(phase)


def test_wait_blocks_on_pending_until_timeout(server: Server) -> None:
    job = server.create("hello", run=False)
    elapsed, phase = timed_get(job, WAIT="1")
    assert phase == "PENDING"
    assert 0.9 <= elapsed < 3


def test_wait_returns_at_once_for_a_final_phase(server: Server) -> None:
    job = server.create("hello", name="Wait")
    server.wait_final(job)
    elapsed, phase = timed_get(job, WAIT="30")
    assert phase == "COMPLETED"
    assert elapsed < 0.5


def test_wait_with_another_phase_returns_at_once(server: Server) -> None:
    job = server.create("hello", run=False)
    elapsed, phase = timed_get(job, WAIT="30", PHASE="EXECUTING")
    assert phase == "PENDING"
    assert elapsed < 0.5


def test_wait_minus_one_returns_when_the_job_ends(server: Server) -> None:
    job = server.create("sleeper", seconds="1.5")
    start = time.monotonic()
    while True:
        _, phase = timed_get(job, WAIT="-1")
        if phase not in ("QUEUED", "EXECUTING"):
            break
    assert phase == "COMPLETED"
    assert time.monotonic() - start < 5


def test_waiter_is_woken_by_run(server: Server) -> None:
    job = server.create("sleeper", run=False, seconds="5", EXECUTIONDURATION="10")
    seen: list[tuple[float, str]] = []
    waiter = threading.Thread(target=lambda: seen.append(timed_get(job, WAIT="60")))
    waiter.start()
    time.sleep(0.5)
    sent = time.monotonic()
    assert requests.post(f"{job}/phase", data={"PHASE": "RUN"}).status_code == 200  # 303 followed
    waiter.join(10)
    assert seen, "the waiter did not return"
    elapsed, phase = seen[0]
    assert phase in ("QUEUED", "EXECUTING")
    # woken by the phase change, not by its 60 s timeout
    assert elapsed < 0.5 + (time.monotonic() - sent) + 0.5
    requests.post(f"{job}/phase", data={"PHASE": "ABORT"})


def test_200_waiters_do_not_stop_the_server(server: Server) -> None:
    """200 blocked WAIT requests; the server still creates jobs; all waiters wake on RUN."""
    job = server.create("hello", run=False, name="crowd")
    results: list[str] = []
    lock = threading.Lock()

    def wait() -> None:
        _, phase = timed_get(job, WAIT="60")
        with lock:
            results.append(phase)

    waiters = [threading.Thread(target=wait) for _ in range(200)]
    for thread in waiters:
        thread.start()
    time.sleep(1.0)
    assert not results, "waiters returned before any phase change"

    start = time.monotonic()
    created = [server.create("hello", name=f"n{i}") for i in range(20)]
    creation_time = time.monotonic() - start
    assert not results
    assert creation_time < 5, f"20 creations took {creation_time:.2f} s beside 200 waiters"
    for url in created:
        server.wait_final(url)

    requests.post(f"{job}/phase", data={"PHASE": "RUN"})
    for thread in waiters:
        thread.join(15)
    assert len(results) == 200
    assert set(results) <= {"QUEUED", "EXECUTING", "COMPLETED"}


def test_bad_wait_values_are_400(server: Server) -> None:
    job = server.create("hello", run=False)
    for params in ({"WAIT": "abc"}, {"WAIT": "1.5"}, {"WAIT": "5", "PHASE": "NOPE"}):
        response = requests.get(job, params=params)
        assert response.status_code == 400
        assert "WAIT" in response.text or "PHASE" in response.text

"""pyvo, the reference VO client, against a real `opus serve`."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.servers import Server

pyvo = pytest.importorskip("pyvo")
from pyvo.dal import DALQueryError  # noqa: E402
from pyvo.dal.tap import AsyncTAPJob  # noqa: E402
from pyvo.io.uws import parse_job, parse_job_list  # noqa: E402


def fetch(server: Server, url: str) -> io.BytesIO:
    response = server.session.get(url)
    assert response.status_code == 200, response.text
    return io.BytesIO(response.content)


def test_parse_job_list(server: Server) -> None:
    pending = server.create("hello", run=False, name="List")
    done = server.create("hello", name="ListDone")
    server.wait_final(done)
    jobs = parse_job_list(fetch(server, server.rest("hello")))
    phases = {job.jobid: job.phase for job in jobs}
    assert phases[pending.rsplit("/", 1)[-1]] == "PENDING"
    assert phases[done.rsplit("/", 1)[-1]] == "COMPLETED"


def test_parse_completed_job(server: Server) -> None:
    url = server.create("hello", name="Parse", RUNID="pyvo-run")
    server.wait_final(url)
    job = parse_job(fetch(server, url))
    assert job.version == "1.1"
    assert job.jobid == url.rsplit("/", 1)[-1]
    assert job.runid == "pyvo-run"
    assert job.phase == "COMPLETED"
    assert job.creationtime is not None and job.starttime is not None and job.endtime is not None
    assert job.endtime >= job.starttime >= job.creationtime
    assert job.destruction is not None and job.destruction > job.creationtime
    assert job.executionduration.sec == 60
    assert {p.id_: p.content for p in job.parameters} == {"name": "Parse"}
    (result,) = job.results
    assert result.id_ == "greeting"
    assert result.mimetype == "text/plain"
    assert result.size == len(b"Hello, Parse!\n")
    assert requests.get(result.href, timeout=10).content == b"Hello, Parse!\n"
    assert job.errorsummary is None


def test_parse_failed_job(server: Server) -> None:
    url = server.create("failing", reason="pyvo says no")
    server.wait_final(url)
    job = parse_job(fetch(server, url))
    assert job.phase == "ERROR"
    assert job.errorsummary is not None
    assert job.errorsummary.type_ in ("transient", "fatal")
    assert "cannot work: pyvo says no" in job.errorsummary.message.content


def test_async_job_run_wait_results(server: Server) -> None:
    url = server.create("hello", run=False, name="Pyvo")
    job = AsyncTAPJob(url, delete=False)
    assert job.phase == "PENDING"
    assert job.uws_version == "1.1"
    job.run()
    job.wait(timeout=30)
    assert job.phase == "COMPLETED"
    job.raise_if_error()
    (result,) = job._job.results
    assert result.id_ == "greeting"
    assert requests.get(result.href, timeout=10).content == b"Hello, Pyvo!\n"
    assert job.result_uris == [result.href] or result.href in job.result_uris


def test_async_job_execution_duration_and_destruction(server: Server) -> None:
    url = server.create("hello", run=False)
    job = AsyncTAPJob(url, delete=False)
    job.execution_duration = 42
    assert job.execution_duration.sec == 42
    wanted = datetime.now(UTC).replace(tzinfo=None, microsecond=654321) + timedelta(days=2)
    job.destruction = wanted
    got = job.destruction.datetime
    assert abs((got - wanted).total_seconds()) < 0.001, (got, wanted)


def test_async_job_failing_raises_with_the_message(server: Server) -> None:
    url = server.create("failing", run=False, reason="bad omens")
    job = AsyncTAPJob(url, delete=False)
    job.run()
    job.wait(timeout=30)
    assert job.phase == "ERROR"
    with pytest.raises(DALQueryError, match="cannot work: bad omens"):
        job.raise_if_error()


def test_async_job_delete(server: Server) -> None:
    url = server.create("hello", run=False)
    job = AsyncTAPJob(url)
    job.delete()
    assert job.url is None
    assert requests.get(url, timeout=10).status_code == 404


def test_async_job_context_deletes_on_exit(server: Server) -> None:
    url = server.create("hello", run=False)
    with AsyncTAPJob(url) as job:
        job.run().wait(timeout=30)
        assert job.phase == "COMPLETED"
    assert requests.get(url, timeout=10).status_code == 404

"""Odd and hostile requests: each gets a 4xx with a text reason, never a 5xx or a traceback."""

from __future__ import annotations

import pytest
import requests

from tests.servers import Server


@pytest.fixture(scope="module")
def done_job(server: Server) -> str:
    url = server.create("hello", name="probe")
    server.wait_final(url)
    return url


PROBES = [
    ("GET", "/store/..%2F..%2Fetc%2Fpasswd", None, 404),
    ("GET", "/store/../../etc/passwd", None, 404),
    ("GET", "{job}/results/..%2F..%2Fopus.sqlite", None, 404),
    ("GET", "{job}/results/../../opus.sqlite", None, 404),
    ("GET", "/jdl/..%2Fsetup.cfg", None, 404),
    ("GET", "/jdl/%00", None, 404),
    ("GET", "/rest/hello/%ff%fe", None, 400),
    ("GET", "/rest/hello?LAST=99999999999999999999", None, 400),
    ("GET", "/rest/hello?AFTER=2026-13-45", None, 400),
    ("GET", "/rest/hello?AFTER=0001-01-01T00:00:00%2B14:00", None, 400),
    ("POST", "{job}/destruction", {"DESTRUCTION": "0001-01-01T00:00:00+14:00"}, 400),
    ("POST", "{job}/destruction", {"DESTRUCTION": "99999-01-01"}, 400),
    ("POST", "{job}/executionduration", {"EXECUTIONDURATION": "9" * 30}, 403),
    ("POST", "/rest/hello", b"\xff\xfe=\xff", 400),
    ("POST", "/rest/opus_echo", {"count": "1e400", "text": "a"}, 400),
    ("POST", "/rest/opus_echo", {"ratio": "1e400", "text": "a"}, 400),
    ("POST", "/rest/opus_echo", {"count": "9" * 5000, "text": "a"}, 400),
    ("POST", "/rest/hello", {"name": "a\x00b"}, 400),
    ("POST", "/rest/hello", {"RUNID": "r" * 300}, 400),
    ("PUT", "{job}/parameters/name", "x", 403),
    ("DELETE", "/rest/hello", None, 405),
    ("PATCH", "{job}", None, 405),
]


@pytest.mark.parametrize(("method", "path", "data", "status"), PROBES)
def test_probe(
    server: Server, done_job: str, method: str, path: str, data: object, status: int
) -> None:
    url = path.format(job=done_job) if path.startswith("{job}") else server.url + path
    response = requests.request(method, url, data=data, allow_redirects=False, timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "Traceback" not in response.text
    assert response.text.strip()

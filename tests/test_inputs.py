"""Inputs given by URL: downloaded by the runner, recorded as entities; bad ones refused.

The archive these tests download from runs on 127.0.0.1, which a server refuses to fetch
from unless told otherwise (tests/test_fetch.py): they use a server that allows it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests.servers import Server, launch

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"


@pytest.fixture(scope="module")
def fetching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that may fetch from 127.0.0.1, where the tests' archive is."""
    running = launch(
        tmp_path_factory.mktemp("opus-fetching"), {"OPUS_FETCH_ALLOW_HOSTS": "127.0.0.1"}
    )
    yield running
    running.stop()


def parameter(doc: etree._Element, name: str) -> etree._Element:
    found = doc.find(f"{UWS}parameters/{UWS}parameter[@id='{name}']")
    assert found is not None
    return found


def test_input_by_url_is_downloaded(fetching_server: Server, file_server: tuple[str, Path]) -> None:
    server = fetching_server
    base, folder = file_server
    (folder / "remote.txt").write_text("from elsewhere\n")
    url = server.create("opus_append", input=f"{base}/remote.txt", text="and here")
    doc = server.wait_final(url)
    assert doc.findtext(f"{UWS}phase") == "COMPLETED", server.session.get(f"{url}/error").text
    assert parameter(doc, "input").get("byReference") == "true"
    assert parameter(doc, "input").text == f"{base}/remote.txt"
    output = server.session.get(f"{url}/results/output")
    assert output.text == "from elsewhere\nand here\n"
    # the downloaded copy is a stored entity with the bytes' checksum
    job = url.rsplit("/", 1)[-1]
    downloads = list((server.data_dir / "jobs" / job / "downloads").iterdir())
    assert len(downloads) == 1
    stored = server.session.get(f"{server.url}/store/{downloads[0].name}")
    assert stored.status_code == 200
    assert stored.content == b"from elsewhere\n"
    assert stored.headers["X-Content-SHA256"] == hashlib.sha256(stored.content).hexdigest()


def test_input_url_that_fails_ends_the_job_in_error(
    fetching_server: Server, file_server: tuple[str, Path]
) -> None:
    server = fetching_server
    base, _ = file_server
    url = server.create("opus_append", input=f"{base}/missing.txt")
    doc = server.wait_final(url)
    assert doc.findtext(f"{UWS}phase") == "ERROR"
    message = server.session.get(f"{url}/error").text
    assert "could not download" in message and "404" in message


@pytest.mark.parametrize(
    "value", ["file:///etc/passwd", "ftp://example.org/x", "../../etc/passwd", "input.txt"]
)
def test_inputs_that_are_not_http_urls_or_entities_are_400(server: Server, value: str) -> None:
    response = server.session.post(
        server.rest("opus_append"), data={"input": value, "PHASE": "RUN"}, allow_redirects=False
    )
    assert response.status_code == 400
    assert "input" in response.text


def test_delete_of_an_executing_job_stops_it(server: Server) -> None:
    url = server.create("sleeper", seconds="30", EXECUTIONDURATION="60")
    job = url.rsplit("/", 1)[-1]
    pid_file = server.data_dir / "jobs" / job / "work" / "pid.txt"
    for _ in range(300):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        threading.Event().wait(0.05)
    pid = int(pid_file.read_text())
    assert server.session.delete(url, allow_redirects=False).status_code == 303
    assert server.session.get(url).status_code == 404
    for _ in range(100):
        try:
            Path(f"/proc/{pid}").stat()
        except FileNotFoundError:
            break
        threading.Event().wait(0.05)
    else:
        pytest.fail("the deleted job's process still runs")
    assert not (server.data_dir / "jobs" / job).exists()

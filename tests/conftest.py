"""Fixtures and hooks: a real `opus serve` (gunicorn + embedded executor) on a free port.

Tests talk HTTP to it as any client would. The session server uses the test
job definitions in tests/jobdefs; tests that need other settings or that kill
and restart a server start their own with `start_server`. The helpers these
build on live in tests/servers.py: tests import them from there, never from here.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from lxml import etree

from tests.servers import (
    IN_CI,
    POSTGRES,
    TEST_DATABASE,
    Server,
    drop_test_databases,
    launch,
    load_schema,
    postgres_database,
)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(tmp_path_factory.mktemp("opus-session"))
    yield running
    running.stop()


ANY_DATABASE = "any_database"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ANY_DATABASE}: the same whatever OPUS_TEST_DATABASE says (no job database in it,"
        " or both databases in each run): run in the SQLite pass only",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass (OPUS_TEST_DATABASE set) the tests marked any_database are
    skipped, saying so: they ran in the SQLite pass and would run the same."""
    if not TEST_DATABASE:
        return
    skip = pytest.mark.skip(reason="the same on either database: run in the SQLite pass")
    for item in items:
        if item.get_closest_marker(ANY_DATABASE):
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None] | pytest.TestReport:
    """Each phase's report kept on the test (`rep_call`...): fixtures see whether it failed
    (the browser tests keep screenshots then)."""
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_test_databases()


@pytest.fixture
def postgres_url(tmp_path: Path) -> str:
    """A fresh PostgreSQL database of the test's own (required in CI)."""
    try:
        return postgres_database(POSTGRES, tmp_path)
    except sqlalchemy.exc.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {POSTGRES} is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers of one's own (settings as OPUS_* variables); all stopped afterwards."""
    started: list[Server] = []

    def start(
        extra_env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
    ) -> Server:
        running = launch(data_dir or tmp_path / f"data{len(started)}", extra_env, port)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on loopback serving tmp_path: an archive elsewhere."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path
    httpd.shutdown()


@pytest.fixture(scope="session")
def uws_schema() -> etree.XMLSchema:
    return load_schema("UWS-v1.1.xsd")

"""A server on PostgreSQL rides out its database going away: connections cut, or the
database refusing connections for a while."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import sqlalchemy

from tests.servers import POSTGRES, Server
from tests.test_execution import started_sleeper

PHASE = "{http://www.ivoa.net/xml/UWS/v1.0}phase"


def _admin(statement: str, params: dict[str, object] | None = None) -> int:
    engine = sqlalchemy.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(sqlalchemy.text(statement), params)
            return len(result.all()) if result.returns_rows else 0
    finally:
        engine.dispose()


def cut_connections(database_url: str) -> int:
    """End every session on the database, as a PostgreSQL restart or a failover would."""
    return _admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = :name AND pid <> pg_backend_pid()",
        {"name": sqlalchemy.make_url(database_url).database},
    )


@contextlib.contextmanager
def database_away(database_url: str) -> Iterator[None]:
    """The database refuses connections, and its sessions are cut, until the block ends."""
    name = sqlalchemy.make_url(database_url).database
    _admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    try:
        cut_connections(database_url)
        yield
    finally:
        _admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


def test_idle_connections_cut_cost_no_request(
    start_server: Callable[..., Server], postgres_url: str
) -> None:
    server = start_server({"OPUS_DATABASE_URL": postgres_url})
    for _ in range(4):  # every web worker and runner holds pooled connections
        server.wait_final(server.create("opus_echo", text="before"))
    assert cut_connections(postgres_url) >= 2
    time.sleep(1.5)  # idle long enough to be checked before use

    for attempt in range(10):
        assert server.session.get(server.rest("opus_echo")).status_code == 200
        doc = server.wait_final(server.create("opus_echo", text=f"after {attempt}"))
        assert doc.findtext(PHASE) == "COMPLETED", attempt
    assert "Traceback" not in server.log.read_text()


def test_database_away_answers_503(start_server: Callable[..., Server], postgres_url: str) -> None:
    server = start_server({"OPUS_DATABASE_URL": postgres_url})
    job = server.create("opus_echo", text="kept")
    server.wait_final(job)
    with database_away(postgres_url):
        time.sleep(1.5)
        for url in (server.rest("opus_echo"), job, f"{job}/phase"):
            response = server.session.get(url)
            assert response.status_code == 503, (url, response.text)
            assert response.text == "the database is unavailable; try again later\n"
            assert response.headers["Retry-After"] == "5"
        availability = server.session.get(f"{server.url}/availability")
        assert b"<vosi:available>false" in availability.content
        assert b"database unreachable" in availability.content
    assert server.wait_final(job).findtext(PHASE) == "COMPLETED"
    assert "Traceback" not in server.log.read_text()


def test_job_ending_while_database_away_keeps_its_results(
    start_server: Callable[..., Server], postgres_url: str
) -> None:
    server = start_server({"OPUS_DATABASE_URL": postgres_url})
    job, _ = started_sleeper(server, seconds="1.5")
    with database_away(postgres_url):
        time.sleep(4)  # the job ends meanwhile; its runner cannot record it yet
        assert (server.data_dir / "jobs" / job.rsplit("/", 1)[1] / "work" / "done.txt").exists()
    assert server.wait_final(job).findtext(PHASE) == "COMPLETED"
    result = server.session.get(f"{job}/results/done")
    assert result.status_code == 200 and result.text == "slept\n"
    provenance = server.session.get(f"{job}/provenance").json()
    assert len(provenance["activity"]) == 1
    assert "Traceback" not in server.log.read_text()

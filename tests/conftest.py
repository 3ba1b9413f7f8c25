"""Fixtures: a real `opus serve` (gunicorn + embedded executor) on a free port.

Tests talk HTTP to it as any client would. The session server uses the test
job definitions in tests/jobdefs; tests that need other settings or that kill
and restart a server start their own with `start_server`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import sqlalchemy
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
TEST_JOBDEFS = ROOT / "tests" / "jobdefs"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# OPUS_TEST_DATABASE=postgresql://... runs every server of the suite on PostgreSQL: each
# data dir gets a database of its own on that server (created, and dropped at the end).
TEST_DATABASE = os.environ.get("OPUS_TEST_DATABASE", "")
_created_databases: set[str] = set()
# The PostgreSQL server of the tests that need one whatever OPUS_TEST_DATABASE says.
POSTGRES = TEST_DATABASE or os.environ.get(
    "OPUS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1/postgres"
)


def database_url(data_dir: Path) -> str:
    """The database of the server that keeps its files in data_dir."""
    if not TEST_DATABASE:
        return f"sqlite:///{data_dir / 'opus.sqlite'}"
    return postgres_database(TEST_DATABASE, data_dir)


def postgres_database(admin_url: str, data_dir: Path) -> str:
    """A new database for data_dir on the PostgreSQL server of admin_url; its URL."""
    name = "opus_" + hashlib.sha1(str(data_dir).encode()).hexdigest()[:16]
    admin = sqlalchemy.make_url(admin_url)
    if name not in _created_databases:
        engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        _created_databases.add(name)
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_test_databases() -> None:
    if not _created_databases:
        return
    engine = sqlalchemy.create_engine(TEST_DATABASE or POSTGRES, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in _created_databases:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def shared_dir() -> Path | None:
    candidate = Path(os.environ.get("OPUS_SHARED", ROOT.parent / "shared"))
    return candidate if candidate.is_dir() else None


def require_shared(sub: str) -> Path:
    """A folder of ../shared: required in CI, a visible skip elsewhere."""
    base = shared_dir()
    if base is None or not (base / sub).exists():
        if IN_CI:
            pytest.fail(f"../shared/{sub} is required in CI and is missing")
        pytest.skip(f"../shared/{sub} not found on this machine")
    return base / sub


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def db_url(self) -> str:
        return self.env["OPUS_DATABASE_URL"]

    def sql(
        self, statement: str, params: Sequence[dict[str, object]] | dict[str, object] = ()
    ) -> int:
        """Run SQL on the server's database (what no request can do); rows changed."""
        engine = sqlalchemy.create_engine(self.db_url)
        try:
            with engine.begin() as conn:
                result = conn.execute(sqlalchemy.text(statement), params or None)
                return int(result.rowcount)
        finally:
            engine.dispose()

    def rest(self, jobdef: str) -> str:
        return f"{self.url}/rest/{jobdef}"

    def create(self, jobdef: str, run: bool = True, files: object = None, **params: object) -> str:
        """Create a job; its URL."""
        data = dict(params)
        if run:
            data["PHASE"] = "RUN"
        response = self.session.post(
            self.rest(jobdef),
            data=data,
            files=files,
            allow_redirects=False,  # type: ignore[arg-type]
        )
        assert response.status_code == 303, response.text
        return str(response.headers["Location"])

    def phase(self, job_url: str) -> str:
        return str(self.session.get(f"{job_url}/phase").text)

    def wait_final(self, job_url: str, timeout: float = 30) -> etree._Element:
        """WAIT until the job is in a final phase; its job document."""
        end = time.monotonic() + timeout
        while True:
            response = self.session.get(job_url, params={"WAIT": "5"}, timeout=timeout + 10)
            assert response.status_code == 200, response.text
            doc = etree.fromstring(response.content)
            phase = doc.findtext("{http://www.ivoa.net/xml/UWS/v1.0}phase")
            if phase in ("COMPLETED", "ERROR", "ABORTED", "ARCHIVED"):
                return doc
            assert time.monotonic() < end, f"job still {phase} after {timeout} s"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.session.close()
        gc.collect()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def _wait_available(server: Server, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.process.poll() is not None:
            raise RuntimeError(f"opus serve exited:\n{server.log.read_text()}")
        # a worker still loading the application answers late: wait on
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            response = requests.get(f"{server.url}/availability", timeout=5)
            if response.status_code == 200 and b"<vosi:available>true" in response.content:
                return
        time.sleep(0.1)
    raise RuntimeError(f"opus serve did not become available:\n{server.log.read_text()}")


def launch(
    data_dir: Path,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    workers: int = 2,
) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env |= {
        "OPUS_DATA_DIR": str(data_dir),
        "OPUS_JOBDEF_PATH": str(TEST_JOBDEFS),
        "OPUS_EXECUTOR_PROCESSES": "4",
        "OPUS_DATABASE_URL": database_url(data_dir),
    }
    env |= extra_env or {}
    port = port or free_port()
    log = data_dir / f"serve-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "opus.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", data_dir, env, process, log)
    try:
        _wait_available(server)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(tmp_path_factory.mktemp("opus-session"))
    yield running
    running.stop()


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


class _XsdResolver(etree.Resolver):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def resolve(self, url: str, pubid: str, context: object) -> object:
        local = self.folder / url.rsplit("/", 1)[-1]
        return self.resolve_filename(str(local), context) if local.exists() else None


def load_schema(name: str) -> etree.XMLSchema:
    folder = require_shared("xsd")
    parser = etree.XMLParser()
    parser.resolvers.add(_XsdResolver(folder))
    return etree.XMLSchema(etree.parse(str(folder / name), parser))


@pytest.fixture(scope="session")
def uws_schema() -> etree.XMLSchema:
    return load_schema("UWS-v1.1.xsd")


def assert_valid(schema: etree.XMLSchema, content: bytes) -> etree._Element:
    doc = etree.fromstring(content)
    if not schema.validate(doc):
        raise AssertionError(f"invalid against the schema: {schema.error_log}\n{content[:2000]!r}")
    return doc


def have(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is required in CI and is not installed")
        pytest.skip(f"{tool} is not installed")
    return path

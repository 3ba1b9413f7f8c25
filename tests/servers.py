"""Shared test helpers: a real `opus serve` (gunicorn + embedded executor) on a free port.

`launch` starts one and returns a `Server` that talks HTTP to it as any client would.
The fixtures of tests/conftest.py and the benchmarks build on these; import them as
`from tests.servers import ...` (one module object, one set of created databases).
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy
from lxml import etree

from opus.phases import FINAL

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


def new_user(server: Server, name: str) -> str:
    """`opus user add NAME` on the server's database (its OPUS_* settings): the token."""
    done = subprocess.run(
        [sys.executable, "-m", "opus.cli", "user", "add", name],
        env=dict(server.env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def opus_all(server: Server, *commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Several `opus` commands at once (independent ones: each takes a second to start)."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "opus.cli", *args],
            env=dict(server.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for args in commands
    ]
    done = []
    for args, process in zip(commands, started, strict=True):
        out, err = process.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(list(args), process.returncode, out, err))
    return done


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

    @property
    def host(self) -> str:
        return str(urlsplit(self.url).hostname)

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 80)

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

    def rows(self, query: str, params: dict[str, object] | None = None) -> list[dict[str, Any]]:
        """Rows read from the server's database (what no request shows), as dicts."""
        engine = sqlalchemy.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                found = conn.execute(sqlalchemy.text(query), params or {})
                return [dict(row._mapping) for row in found]
        finally:
            engine.dispose()

    def scalar(self, query: str, params: dict[str, object] | None = None) -> object:
        """One value read from the server's database (None: no row)."""
        found = self.rows(query, params)
        return next(iter(found[0].values())) if found else None

    def rest(self, jobdef: str) -> str:
        return f"{self.url}/rest/{jobdef}"

    def create(self, jobdef: str, run: bool = True, files: Any = None, **params: object) -> str:
        """Create a job; its URL."""
        data = dict(params)
        if run:
            data["PHASE"] = "RUN"
        response = self.session.post(
            self.rest(jobdef),
            data=data,
            files=files,
            allow_redirects=False,
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
            if phase in FINAL:
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
    timeout: float = 30,
) -> Server:
    """Start `opus serve` on data_dir (settings as OPUS_* variables); wait until available."""
    data_dir.mkdir(parents=True, exist_ok=True)
    extra_env = extra_env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env |= {
        "OPUS_DATA_DIR": str(data_dir),
        "OPUS_JOBDEF_PATH": str(TEST_JOBDEFS),
        "OPUS_EXECUTOR_PROCESSES": "4",
    }
    if "OPUS_DATABASE_URL" not in extra_env:  # no test database made for nothing
        env["OPUS_DATABASE_URL"] = database_url(data_dir)
    env |= extra_env
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
        _wait_available(server, timeout)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


class _XsdResolver(etree.Resolver):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    # lxml calls resolve(url, pubid, context); lxml-stubs knows neither that nor
    # resolve_filename
    def resolve(self, url: str, pubid: str, context: object) -> object:  # type: ignore[override]
        local = self.folder / url.rsplit("/", 1)[-1]
        if not local.exists():
            return None
        return self.resolve_filename(str(local), context)  # type: ignore[attr-defined]


def load_schema(name: str) -> etree.XMLSchema:
    folder = require_shared("xsd")
    parser = etree.XMLParser()
    parser.resolvers.add(_XsdResolver(folder))
    return etree.XMLSchema(etree.parse(str(folder / name), parser))


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

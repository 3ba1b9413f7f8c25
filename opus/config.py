"""One Settings object for the whole server, read from OPUS_* environment variables.

Every part of the server receives the Settings it runs with; nothing reads the
environment on its own, so tests build a Settings and never patch globals.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
from importlib import resources
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The shipped definitions: the repository's top-level job_definitions/, installed as the
# package data opus.job_definitions (setup.cfg maps it), editable or not.
SHIPPED_JOBDEFS = Path(str(resources.files("opus.job_definitions")))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OPUS_", extra="ignore", frozen=True, populate_by_name=True
    )

    data_dir: Path = Field(default=Path("opus-data"), description="jobs, results, database")
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite in data_dir")
    jobdef_path: str = Field(default="", description="extra job definition folders, ':'-separated")
    broker_url: str = Field(default="", description="Celery broker; empty means embedded executor")
    max_execution_duration: int = Field(default=3600, ge=1, description="seconds")
    default_destruction_days: float = Field(default=30.0, gt=0)
    max_destruction_days: float = Field(default=365.0, gt=0)
    allow_anonymous: bool | None = Field(
        default=None, description="unset: anonymous requests only when listening on loopback"
    )
    host: str = Field(default="127.0.0.1", description="the address `opus serve` listens on")
    port: int = Field(default=8080, ge=1, le=65535, description="the port `opus serve` uses")
    token: str = Field(default="", description="the API token `opus submit` and `opus jobs` send")
    max_active_jobs: int = Field(
        default=100, ge=0, description="QUEUED or EXECUTING jobs a user may have; 0: no limit"
    )
    max_upload_bytes: int = Field(
        default=100 * 2**20, ge=0, description="largest request body (uploads), bytes; 0: no limit"
    )
    fetch_allow_hosts: str = Field(
        default="",
        description="hosts (names or addresses, comma-separated) URL inputs may reach "
        "although they are loopback, private, link-local or metadata addresses",
    )
    fetch_timeout: float = Field(default=60.0, gt=0, description="URL input download, s")
    fetch_max_bytes: int = Field(default=2**30, ge=1, description="largest URL input, bytes")
    max_wait: int = Field(default=600, ge=0, description="longest WAIT a request may block, s")
    public_url: str = Field(
        default="",
        description="the server's public base URL (https://host/prefix): the provenance "
        "namespace and every location are under it; empty: the URL each request shows",
    )
    tap_maxrec: int = Field(default=10_000, ge=0, description="TAP rows when MAXREC is not given")
    tap_hard_maxrec: int = Field(default=1_000_000, ge=1, description="TAP rows at most")
    tap_sync_timeout: float = Field(default=60.0, gt=0, description="a sync TAP query's limit, s")
    tap_upload_max_rows: int = Field(default=100_000, ge=1, description="rows of one TAP upload")
    tap_upload_max_bytes: int = Field(
        default=16 * 2**20, ge=1, description="bytes of one TAP upload table"
    )
    tap_max_depth: int = Field(
        default=1000, ge=1, description="hops at most of the ADQL lineage functions"
    )
    real_data: str = Field(
        default="",
        description="the folder of the real data the science definitions read (ZTF alerts, "
        "H.E.S.S. DL3, TiDES); empty: ../shared/data beside the checkout, when it exists",
    )
    staging_url: str = Field(
        default="",
        description="SQLAlchemy URL of the database t3_select_export stages targets in; "
        "empty: staging.sqlite in data_dir",
    )
    secret_key: str = Field(
        default="",
        description="the key web sessions are signed with; empty: a random one kept in "
        "data_dir/secret_key",
    )
    store_url: str = Field(
        default="",
        description="where stored files live: empty, the data folder; s3://bucket/prefix, an "
        "S3-compatible object store (credentials as boto3 finds them: AWS_ACCESS_KEY_ID...)",
    )
    s3_endpoint_url: str = Field(
        default="",
        description="the S3 endpoint of a store not on AWS (MinIO, Ceph): http://host:9000",
    )
    s3_presigned: bool = Field(
        default=False,
        description="results of an object store are downloaded by a redirect to a short-lived "
        "presigned URL, not streamed through the web server",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="opus worker: serve what this host's jobs counted at "
        "http://<OPUS_HOST>:<port>/metrics (a worker host of its own); 0: not served",
    )
    executor_processes: int = Field(default=0, ge=0, description="0 means one per CPU")
    sweep_interval: float = Field(default=60.0, gt=0, description="destruction sweep period, s")
    server: str = Field(
        default="http://127.0.0.1:8080", description="the server `opus submit` and `opus jobs` use"
    )
    container_image_id: str = Field(
        default="",
        validation_alias=AliasChoices("OPUS_CONTAINER_IMAGE_ID", "CONTAINER_IMAGE_ID"),
        description="recorded in each job's context; read from the cgroup when empty",
    )
    job_path: str = Field(
        default="/usr/local/bin:/usr/bin:/bin",
        validation_alias=AliasChoices("OPUS_JOB_PATH", "PATH"),
        description="PATH of a job's processes: the server's own unless set",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def anonymous(self) -> bool:
        """Whether requests without credentials are served (as the anonymous owner)."""
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @property
    def server_url(self) -> str:
        """The server's base URL where no request shows one (a command on its machine):
        the public one, else where `opus serve` listens."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def fetch_allowed(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.fetch_allow_hosts.split(",") if h.strip())

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'opus.sqlite'}"

    @property
    def jobdef_dirs(self) -> list[Path]:
        extra = [Path(p).expanduser() for p in self.jobdef_path.split(":") if p.strip()]
        return [SHIPPED_JOBDEFS, *extra]

    @property
    def real_data_dir(self) -> Path | None:
        """Where the science definitions find their data (None: nowhere)."""
        if self.real_data:
            return Path(self.real_data).expanduser().resolve()
        beside = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
        return beside if beside.is_dir() else None

    @property
    def staging_db_url(self) -> str:
        return self.staging_url or f"sqlite:///{self.data_dir / 'staging.sqlite'}"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def run_dir(self) -> Path:
        """Sockets of this server's processes.

        UNIX socket paths are limited to about 100 bytes, so the folder lives in
        the temporary directory under a short name derived from the data dir:
        every process sharing a data dir (and so a database) finds the others.
        """
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"opus-{digest}"

    @property
    def metrics_dir(self) -> Path:
        """Where this host's processes of the server count their metrics (opus/metrics.py)."""
        return self.run_dir / "metrics"

    @property
    def pool_size(self) -> int:
        return self.executor_processes or max(2, os.cpu_count() or 2)


# prometheus_client's multiprocess mode: the library reads this variable itself, once, when
# it is first imported (each process's own file goes into that folder)
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir_in_use() -> Path | None:
    """The folder this process counts its metrics in (multiprocess mode); None: in memory."""
    value = os.environ.get(METRICS_DIR_VARIABLE, "")
    return Path(value) if value else None


def share_metrics_dir(folder: Path) -> None:
    """Make `folder`, emptied of the files of earlier runs, the metrics folder of this
    process and of every process it starts: for `opus serve`, before any of them starts
    and before prometheus_client is imported."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.db"):
        old.unlink(missing_ok=True)
    os.environ[METRICS_DIR_VARIABLE] = str(folder)


def join_metrics_dir(folder: Path, make: bool = False) -> None:
    """Count in `folder` if a server of this host made it (an `opus worker` beside `opus
    serve`: its jobs' counts join the server's scrape), or, with `make`, in a folder made
    now (a worker host that serves its own metrics); else in this process's memory."""
    if metrics_dir_in_use():
        return
    if make:
        folder.mkdir(parents=True, exist_ok=True)
    if folder.is_dir():
        os.environ[METRICS_DIR_VARIABLE] = str(folder)

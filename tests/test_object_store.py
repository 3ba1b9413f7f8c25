"""Results and inputs in an S3-compatible object store: a real S3 server (moto's server
mode, on a free loopback port) and real OPUS servers and workers; no mock of boto3.

Uploads, results and downloads go to the store under keys of their own, with the
checksums provenance records; large files go up in parts; downloads stream through the
web server or redirect to a presigned URL; a worker with a data folder of its own (no
disk shared with the web server) runs jobs; destruction deletes the objects; an outage
ends the job in ERROR saying the store is unreachable, with nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import redis
import requests
from moto.server import ThreadedMotoServer

from tests.servers import Server, free_port
from tests.test_celery import SHARED_REDIS, Cluster, require_redis
from tests.test_execution import wait_for

pytestmark = pytest.mark.any_database  # the store is the same on either; one test is on PostgreSQL

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
STORE_REDIS = urlsplit(SHARED_REDIS)._replace(path="/10").geturl()  # this module's own
PREFIX = "site-a"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3:
    """A moto S3 server of the test's own, that it may stop and start again."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.server = ThreadedMotoServer(ip_address=host, port=self.port, verbose=False)
        self.server.start()
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        # moto keeps its buckets in this process across servers: one of this test's own
        self.bucket = f"opus-results-{self.port}"
        self.client.create_bucket(Bucket=self.bucket)

    def env(self, **more: str) -> dict[str, str]:
        return {
            "OPUS_STORE_URL": f"s3://{self.bucket}/{PREFIX}",
            "OPUS_S3_ENDPOINT_URL": self.url,
            **CREDENTIALS,
            **more,
        }

    def objects(self) -> list[str]:
        found = self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return sorted(o["Key"] for o in found)

    def head(self, key: str) -> dict[str, Any]:
        head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        return head

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self.server.start()


@pytest.fixture
def s3() -> Iterator[S3]:
    running = S3()
    yield running
    running.stop()


def entity_rows(server: Server, job_id: str) -> list[dict[str, Any]]:
    return server.rows(
        "SELECT id, name, origin, path, sha256, size FROM entities WHERE job_id = :j"
        " ORDER BY origin, name",
        {"j": job_id},
    )


def provenance_checksums(server: Server, job_url: str) -> dict[str, str]:
    """Each entity of the job's PROV-JSON -> its recorded sha256."""
    doc = server.session.get(f"{job_url}/provenance", params={"RESPONSEFORMAT": "PROV-JSON"})
    assert doc.status_code == 200, doc.text
    found = {}
    for name, entity in json.loads(doc.text).get("entity", {}).items():
        for key, value in entity.items():
            if key.endswith("hash") or key.endswith("sha256"):
                found[name] = value if isinstance(value, str) else value.get("$", "")
    return found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_uploads_and_results_live_in_the_store(start_server: Callable[..., Server], s3: S3) -> None:
    server = start_server(s3.env())
    first_text, second_text = b"alpha\n", b"beta\n"
    url = server.create(
        "concat", files=[("inputs", ("a.txt", first_text)), ("inputs", ("b.txt", second_text))]
    )
    assert server.wait_final(url).findtext(f"{UWS}phase") == "COMPLETED"
    job_id = url.rsplit("/", 1)[1]
    rows = entity_rows(server, job_id)
    assert [(r["origin"], r["name"]) for r in rows] == [
        ("result", "all"),
        ("upload", "inputs"),
        ("upload", "inputs"),
    ]
    # every stored file is an object of its own key; the web host keeps no upload
    assert s3.objects() == sorted(f"{PREFIX}/{r['path']}" for r in rows)
    assert all(r["path"].startswith(f"{r['origin']}s/{r['id']}/") for r in rows)
    assert not any((server.data_dir / "uploads").rglob("*.*"))

    result = server.session.get(f"{url}/results/all")
    assert result.status_code == 200
    assert result.content == first_text + second_text
    assert result.headers["X-Content-SHA256"] == sha(result.content) == rows[0]["sha256"]
    assert result.headers["Content-Type"].startswith("text/plain")
    assert sha(result.content) in provenance_checksums(server, url).values()

    # a later job reads the result from the store (another job's input, by its id)
    again = server.create("concat", inputs=rows[0]["id"])
    assert server.wait_final(again).findtext(f"{UWS}phase") == "COMPLETED"
    assert server.session.get(f"{again}/results/all").content == first_text + second_text

    # deleting the job deletes its objects (the later job's stay)
    assert server.session.delete(url).status_code in (200, 303)
    assert not [key for key in s3.objects() if any(r["id"] in key for r in rows)]
    assert len(s3.objects()) == 1


def test_large_results_go_up_in_parts_and_download_presigned(
    start_server: Callable[..., Server], s3: S3
) -> None:
    server = start_server(s3.env(OPUS_S3_PRESIGNED="true"))
    url = server.create("blob", megabytes="20")
    assert server.wait_final(url, timeout=60).findtext(f"{UWS}phase") == "COMPLETED"
    (row,) = entity_rows(server, url.rsplit("/", 1)[1])
    head = s3.head(f"{PREFIX}/{row['path']}")
    assert head["ContentLength"] == 20 * 2**20 == row["size"]
    assert head["ETag"].strip('"').endswith("-3")  # three parts of 8 MiB at most

    redirect = server.session.get(f"{url}/results/blob", allow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["X-Content-SHA256"] == row["sha256"]
    location = redirect.headers["Location"]
    assert location.startswith(s3.url) and "Signature" in location
    body = requests.get(location, timeout=30)
    assert body.status_code == 200
    assert sha(body.content) == row["sha256"]
    assert "blob.bin" in body.headers["Content-Disposition"]


def test_destruction_sweep_deletes_the_objects(start_server: Callable[..., Server], s3: S3) -> None:
    server = start_server(s3.env(OPUS_SWEEP_INTERVAL="1"))
    url = server.create("concat", files=[("inputs", ("a.txt", b"gone soon\n"))])
    assert server.wait_final(url).findtext(f"{UWS}phase") == "COMPLETED"
    assert len(s3.objects()) == 2
    response = server.session.post(
        f"{url}/destruction", data={"DESTRUCTION": "2000-01-01T00:00:00Z"}, allow_redirects=False
    )
    assert response.status_code == 303
    wait_for(lambda: server.session.get(url).status_code == 404, 15, "the destruction sweep")
    assert s3.objects() == []


def test_a_store_outage_ends_the_job_in_error_with_nothing_half_written(
    start_server: Callable[..., Server], s3: S3
) -> None:
    server = start_server(s3.env())
    url = server.create("blob", megabytes="1", seconds="1.5")
    wait_for(lambda: server.phase(url) == "EXECUTING", 15, "the job to start")
    s3.stop()
    try:
        doc = server.wait_final(url, timeout=60)
        assert doc.findtext(f"{UWS}phase") == "ERROR"
        error = server.session.get(f"{url}/error").text
        assert "object store unreachable" in error
        assert entity_rows(server, url.rsplit("/", 1)[1]) == []
        # an upload while the store is away: 503, and no job
        refused = server.session.post(
            server.rest("concat"),
            files=[("inputs", ("a.txt", b"x\n"))],
            data={"PHASE": "RUN"},
            allow_redirects=False,
        )
        assert refused.status_code == 503
        assert "object store" in refused.text
    finally:
        s3.start()
    assert s3.objects() == []  # nothing of the failed job reached the store
    later = server.create("blob", megabytes="1")
    assert server.wait_final(later, timeout=30).findtext(f"{UWS}phase") == "COMPLETED"


def test_a_worker_sharing_no_disk_with_the_web_server(
    start_server: Callable[..., Server], s3: S3, postgres_url: str, tmp_path: Path
) -> None:
    """The worker's data folder is its own; it shares PostgreSQL, Redis and the store."""
    require_redis(STORE_REDIS)
    redis.Redis.from_url(STORE_REDIS).flushdb()
    env = s3.env(OPUS_DATABASE_URL=postgres_url)
    running = Cluster(lambda more: start_server({**more, **env}), STORE_REDIS, tmp_path)
    try:
        worker_dir = tmp_path / "worker-host"
        running.worker(1, env={"OPUS_DATA_DIR": str(worker_dir)})
        server = running.server
        url = server.create("concat", files=[("inputs", ("a.txt", b"far away\n"))])
        assert server.wait_final(url, timeout=40).findtext(f"{UWS}phase") == "COMPLETED"
        job_id = url.rsplit("/", 1)[1]
        assert server.session.get(f"{url}/results/all").content == b"far away\n"
        # the job ran in the worker's folder; the web host never saw its files
        assert (worker_dir / "jobs" / job_id).is_dir()
        assert not (server.data_dir / "jobs" / job_id).exists()
        kinds = {r["path"].split("/")[0] for r in entity_rows(server, job_id)}
        assert kinds == {"results", "uploads"}
    finally:
        running.stop()

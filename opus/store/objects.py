"""Where stored files' bytes live: the data folder (the default) or an S3-compatible
object store (`OPUS_STORE_URL=s3://bucket/prefix`), behind one interface.

An entity's `path` is its key here. In the data folder it is the file's path below it,
as it always was (results stay where the job wrote them). In an object store it is
`<kind>/<entity id>/<file name>`: an entity id is never reused, so a retried job, or
another job of the same result name, never overwrites an object. A web server, a worker
on another host and the sweeps only need the store's address: no shared disk.

Credentials for S3 are boto3's own (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, instance roles); OPUS_S3_ENDPOINT_URL names a non-AWS endpoint (MinIO,
Ceph, moto).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Generator, Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from opus.config import Settings
from opus.extras import require
from opus.store.files import CHUNK, stored_file

PRESIGNED_SECONDS = 300  # a presigned download's life
MULTIPART_ABOVE = 8 * 2**20  # bytes: larger files go up in parts (boto3's default)


def object_key(kind: str, entity_id: str, file_name: str) -> str:
    """The key a stored file of this kind (results, uploads, downloads) is kept under in an
    object store: its entity's id, never reused, so that no object is written twice."""
    return f"{kind}/{entity_id}/{file_name}"


class StoreUnavailable(Exception):
    """The object store did not answer (or refused us): nothing was written."""


class ObjectMissing(Exception):
    """No object under that key (destroyed, or never stored)."""


class Storage(Protocol):
    remote: bool  # bytes live elsewhere than this host's data folder

    def keep(self, local: Path, key: str) -> str:
        """Store the bytes of `local`, a file in the data folder, as `key` (a fresh key:
        `object_key`); the key the entity records. The data folder keeps
        the file where it is and records its path instead."""

    def fetch(self, key: str, target: Path) -> None:
        """Copy the object into `target` (ObjectMissing, StoreUnavailable)."""

    def local(self, key: str) -> Path | None:
        """The object as a file of this host, readable in place; None for a remote store
        (or a file replaced by a link since: never read for a client)."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """The object's size in bytes (ObjectMissing, StoreUnavailable)."""

    def stream(self, key: str) -> Generator[bytes, None, None]:
        """The object's bytes in chunks, for a response (ObjectMissing, StoreUnavailable)."""

    def url(self, key: str, content_type: str, disposition: str) -> str:
        """A short-lived URL that downloads the object with these headers (remote
        stores only)."""

    def delete(self, keys: Iterable[str]) -> None:
        """Remove these objects; those already gone are no error."""


class DataFolder:
    """The files under the data folder (one host, or a folder every host mounts)."""

    remote = False

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir

    def keep(self, local: Path, key: str) -> str:
        return str(local.relative_to(self.root))

    def fetch(self, key: str, target: Path) -> None:
        source = self.root / key
        if not source.is_file():
            raise ObjectMissing(key)
        shutil.copyfile(source, target)

    def local(self, key: str) -> Path | None:
        path = stored_file(self.root, key)
        return path if path is not None and path.is_file() else None

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def size(self, key: str) -> int:
        try:
            return (self.root / key).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def stream(self, key: str) -> Generator[bytes, None, None]:
        with (self.root / key).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def url(self, key: str, content_type: str, disposition: str) -> str:
        raise NotImplementedError("files of the data folder are served by the web server")

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                (self.root / key).unlink()


class ObjectStore:
    """An S3 bucket (and a prefix in it), through boto3."""

    remote = True

    def __init__(self, url: str, endpoint_url: str | None) -> None:
        require("boto3")
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"OPUS_STORE_URL {url!r} is not s3://bucket[/prefix]")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        # an outage ends a job in seconds, not minutes: short timeouts, few retries
        config = Config(
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version="s3v4",
        )
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, config=config
        )
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_ABOVE, multipart_chunksize=MULTIPART_ABOVE
        )

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _answering(self, key: str) -> Iterator[None]:
        """boto3's failures as ours: a missing object, or a store that does not answer."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(key) from None
            raise StoreUnavailable(f"{error.get('Code')}: {error.get('Message')}") from None
        except (BotoCoreError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from None

    def keep(self, local: Path, key: str) -> str:
        with self._answering(key):
            self.client.upload_file(str(local), self.bucket, self._name(key), Config=self.transfer)
        return key

    def fetch(self, key: str, target: Path) -> None:
        # a partial download is never left where the job would read it
        draft = target.with_name(f".{target.name}.part")
        try:
            with self._answering(key):
                self.client.download_file(
                    self.bucket, self._name(key), str(draft), Config=self.transfer
                )
            os.replace(draft, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                draft.unlink()

    def local(self, key: str) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectMissing:
            return False
        return True

    def size(self, key: str) -> int:
        with self._answering(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        return int(head["ContentLength"])

    def stream(self, key: str) -> Generator[bytes, None, None]:
        with self._answering(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
        try:
            while True:
                with self._answering(key):
                    chunk = body.read(CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def url(self, key: str, content_type: str, disposition: str) -> str:
        with self._answering(key):
            found: str = self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self._name(key),
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": disposition,
                },
                ExpiresIn=PRESIGNED_SECONDS,
            )
        return found

    def delete(self, keys: Iterable[str]) -> None:
        names = [{"Key": self._name(k)} for k in keys]
        for start in range(0, len(names), 1000):  # S3's most per request
            with self._answering(""):
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": names[start : start + 1000]}
                )


@lru_cache(maxsize=8)
def _made(pid: int, store_url: str, endpoint: str, data_dir: Path) -> Storage:
    if store_url:
        return ObjectStore(store_url, endpoint)
    return DataFolder(data_dir)


def storage_of(settings: Settings) -> Storage:
    """The storage the settings name, one per process (boto3 clients do not cross forks)."""
    return _made(os.getpid(), settings.store_url, settings.s3_endpoint_url, settings.data_dir)


def copy_into(storage: Storage, key: str, target: Path) -> None:
    """The object's bytes at `target`: a hard link to the data folder's file where one
    can be made (no copy of a large file), else a copy (ObjectMissing, StoreUnavailable)."""
    source = storage.local(key)
    if source is None:
        storage.fetch(key, target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@contextlib.contextmanager
def readable(storage: Storage, key: str, most: int) -> Iterator[Path | None]:
    """A file of this host holding the object, for reading in place (previews): the
    object itself in the data folder, else a temporary copy of it if it is at most
    `most` bytes; None if it is gone, larger, or the store does not answer."""
    found = storage.local(key)
    if found is not None or not storage.remote:
        yield found
        return
    with tempfile.TemporaryDirectory(prefix="opus-object-") as folder:
        copy = Path(folder) / "object"
        try:
            if storage.size(key) > most:
                raise ObjectMissing(key)
            storage.fetch(key, copy)
        except (ObjectMissing, StoreUnavailable):
            yield None
            return
        yield copy

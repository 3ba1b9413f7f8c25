"""Bytes of stored entities: written and hashed in one pass."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str) -> str:
    """A client's file name made harmless for paths, headers and a job's command lines
    (no leading '-' to be read as an option; '' if nothing is left)."""
    safe = UNSAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1])
    return safe[-200:].lstrip(".-")  # the end keeps the extension


def stored_file(data_dir: Path, relative: str) -> Path | None:
    """The stored file at `relative` in the data folder; None where a link was put in its
    place since (by a job's process): that is never read for a client."""
    path = data_dir / relative
    return path if os.path.realpath(path) == str(path) else None


class TooLarge(Exception):
    """The stream went past the size limit; the partial file is removed."""


def write_stream(stream: BinaryIO, target: Path, limit: int | None = None) -> tuple[str, int]:
    """Copy a stream into `target`; its sha256 (hex) and size."""
    digest, size = hashlib.sha256(), 0
    with target.open("wb") as out:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if limit is not None and size > limit:
                out.close()
                target.unlink()
                raise TooLarge(f"larger than {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size

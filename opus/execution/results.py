"""A finished job's results: the files its definition declares, hashed and recorded."""

from __future__ import annotations

import contextlib
import mimetypes
from dataclasses import replace
from pathlib import Path

from opus.config import Settings
from opus.execution.failures import JobFailure
from opus.jobdefs.model import JobDefinition
from opus.store import jobs as store
from opus.store.files import hash_file
from opus.store.objects import Storage, StoreUnavailable, object_key


def collect_results(
    settings: Settings, jobdef: JobDefinition, job_id: str, workdir: Path
) -> list[store.EntityRecord]:
    """The results the definition declares, found in the working directory, hashed."""
    rows: list[store.EntityRecord] = []
    seen: set[str] = set()
    real_workdir = workdir.resolve()
    for gen in jobdef.generated:
        if gen.is_pattern:
            matches = sorted(p for p in workdir.glob(gen.file_name) if p.is_file())
        else:
            candidate = workdir / gen.file_name
            matches = [candidate] if candidate.is_file() else []
        if not matches and not gen.is_pattern:
            raise JobFailure(f"result {gen.name} ({gen.file_name}) was not produced")
        for path in matches:
            relative = path.relative_to(workdir).as_posix()
            if not relative.isprintable():  # line breaks, controls, bytes that are not UTF-8
                raise JobFailure(f"result {gen.name}: the file name {relative!r} is not printable")
            real = path.resolve()
            if not real.is_relative_to(real_workdir):
                raise JobFailure(f"result {gen.name}: {path.name} points outside the job directory")
            result_id = relative if gen.is_pattern else gen.name
            if result_id in seen:
                continue
            seen.add(result_id)
            sha, size = hash_file(real)
            content_type = gen.content_type
            if gen.is_pattern and content_type == "application/octet-stream":
                content_type = mimetypes.guess_type(path.name)[0] or content_type
            rows.append(
                store.new_entity(
                    job_id=job_id,
                    name=result_id,
                    role=gen.name,
                    origin="result",
                    path=str(real.relative_to(settings.data_dir.resolve())),
                    file_name=path.name,
                    content_type=content_type,
                    size=size,
                    sha256=sha,
                )
            )
    return rows


def publish(
    settings: Settings, storage: Storage, results: list[store.EntityRecord]
) -> list[store.EntityRecord]:
    """The results' bytes put in the store, under keys of their own; the rows with those
    keys. An object store that fails takes none of them (those already up are removed)."""
    if not storage.remote:
        return results
    kept: list[store.EntityRecord] = []
    try:
        for row in results:
            key = object_key("results", row.id, row.file_name)
            storage.keep(settings.data_dir / row.path, key)
            kept.append(replace(row, path=key))
    except StoreUnavailable as exc:
        with contextlib.suppress(StoreUnavailable):
            storage.delete(r.path for r in kept)
        raise JobFailure(
            f"the results could not be stored: object store unreachable ({exc})"
        ) from None
    return kept

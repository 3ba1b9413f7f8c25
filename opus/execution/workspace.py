"""A job's working directory: its inputs placed, its environment and its command line.

Values reach a job's process only as environment variables (or typed keyword arguments
of a callable), never pasted into the script text: a value is data, never code.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
from pathlib import Path
from string import Template
from typing import Any

from opus.config import Settings
from opus.execution.failures import JobFailure
from opus.execution.fetch import FetchFailed, UnsafeURL, fetch
from opus.execution.orphans import RUNNER_PID
from opus.ids import new_id
from opus.jobdefs.model import RERUN, JobDefinition
from opus.jobdefs.params import python_value
from opus.store import jobs as store
from opus.store.db import Database
from opus.store.files import TooLarge, safe_file_name
from opus.store.objects import ObjectMissing, Storage, StoreUnavailable, object_key

DATA_RIGHTS = "OPUS_DATA_RIGHTS"  # a job's owner's data rights, for scripts and commands
# where a callable writes its manifest (opus.units.manifest), outside the results' folder
MANIFEST_NAME = "manifest.json"


def job_root(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id


def download_inputs(
    settings: Settings,
    storage: Storage,
    db: Database,
    job_id: str,
    jobdef: JobDefinition,
    parameters: list[store.ParameterValue],
    resolved_roles: set[str],
    root: Path,
) -> list[tuple[str, store.EntityRecord]]:
    """Fetch the used entities given by URL and record them as entities of this job.

    The URL was checked when the job was submitted; `fetch` checks it again (names may
    resolve differently now) and every redirect."""
    rows: list[store.EntityRecord] = []
    folder = root / "downloads"
    for param in parameters:
        used = jobdef.used_entity(param.name)
        if used is None or param.name in resolved_roles or not param.by_reference:
            continue
        folder.mkdir(exist_ok=True)
        entity_id = new_id()
        target = folder / entity_id
        try:
            sha256, size, given_type = fetch(param.value, target, settings)
        except UnsafeURL as exc:
            raise JobFailure(f"{param.name}: {exc}") from None
        except FetchFailed as exc:
            raise JobFailure(f"{param.name}: could not download {exc}") from None
        except TooLarge:
            limit = _size(settings.fetch_max_bytes)
            raise JobFailure(f"{param.name}: {param.value} is larger than {limit}") from None
        file_name = safe_file_name(param.value.split("?")[0]) or param.name
        try:
            key = storage.keep(target, object_key("downloads", entity_id, file_name))
        except StoreUnavailable as exc:
            raise JobFailure(f"{param.name}: object store unreachable ({exc})") from None
        rows.append(
            store.new_entity(
                id=entity_id,
                job_id=job_id,
                name=param.name,
                origin="download",
                path=key,
                file_name=file_name,
                content_type=given_type.split(";")[0].strip() if given_type else used.content_type,
                size=size,
                sha256=sha256,
                location=param.value,
            )
        )
    if not rows:
        return []
    with db.write() as conn:
        store.insert_entities(conn, rows)
        store.replace_inputs(
            conn,
            job_id,
            [r.role for r in rows],
            [dict(role=r.role, position=i, entity_id=r.id) for i, r in enumerate(rows)],
        )
    return [(r.role, r) for r in rows]


def _size(count: int) -> str:
    for unit, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if count >= unit and count % unit == 0:
            return f"{count // unit} {name}"
    return f"{count} bytes"


def place_inputs(
    storage: Storage,
    jobdef: JobDefinition,
    inputs: list[tuple[str, store.EntityRecord]],
    workdir: Path,
) -> dict[str, list[str]]:
    """Copy each used entity's file into the working directory; role -> file names.

    A copy, not a link: a job that writes to its input must not change a stored entity.
    A name that a result would take (or a pattern would match) gets the role as prefix,
    so that a job never overwrites its input with its output."""
    placed: dict[str, list[str]] = {}
    taken: set[str] = set()
    for role, entity in inputs:
        name = safe_file_name(entity.file_name) or role
        if name in taken or any(fnmatch.fnmatch(name, g.file_name) for g in jobdef.generated):
            name = f"{role}_{len(placed.get(role, []))}_{name}"
        taken.add(name)
        try:
            storage.fetch(entity.path, workdir / name)
        except ObjectMissing:
            raise JobFailure(f"{role}: the stored file of entity {entity.id} is gone") from None
        except StoreUnavailable as exc:
            raise JobFailure(f"{role}: object store unreachable ({exc})") from None
        placed.setdefault(role, []).append(name)
    return placed


def environment(
    settings: Settings,
    jobdef: JobDefinition,
    values: dict[str, str],
    input_files: dict[str, list[str]],
    root: Path,
    rights: list[str] | None = None,
) -> dict[str, str]:
    """The job's environment: its values, input and result file names, and the data
    rights of its owner (OPUS_DATA_RIGHTS, comma-separated; empty for none)."""
    env = {
        "PATH": settings.job_path,
        "HOME": str(root),
        "TMPDIR": str(root),  # the job's own folder, outside the one results are taken from
        "LANG": "C.UTF-8",
        RUNNER_PID: str(os.getpid()),  # the job's processes are stopped if this one dies
        DATA_RIGHTS: ",".join(rights or []),
        # matplotlib's font cache, kept between jobs (built anew in each HOME: 4-5 s a job)
        "MPLCONFIGDIR": str(settings.data_dir / "cache" / "matplotlib"),
    }
    for pdef in jobdef.parameters:
        if pdef.name in values:
            env[pdef.name] = values[pdef.name]
        elif pdef.default is not None:
            env[pdef.name] = pdef.default
    for used in jobdef.used:
        if used.name in input_files:
            env[used.name] = " ".join(input_files[used.name])
    for gen in jobdef.generated:
        env[gen.name] = gen.file_name
    return env


def argv(
    jobdef: JobDefinition,
    input_files: dict[str, list[str]],
    env: dict[str, str],
    root: Path,
    server: dict[str, Any],
) -> list[str]:
    """The job's process. `server`: what the server gives a callable that declares a
    keyword of that name (data_rights, real_data, staging_url)."""
    execution = jobdef.execution
    if execution.script is not None:
        # The definition's text as one argument (no file to write): values reach it only
        # through the environment. $0 names the definition in bash's messages.
        return ["bash", "--noprofile", "--norc", "-c", execution.script, jobdef.name]
    if execution.command is not None:
        # Each element is one argument: a value never becomes shell syntax.
        return [Template(arg).safe_substitute(env) for arg in execution.command]
    call = root / "call.json"
    call.write_text(
        json.dumps(
            {
                "callable": execution.callable,
                "kwargs": typed_kwargs(jobdef, env, input_files),
                "server": server,
                "manifest": str(root / MANIFEST_NAME),
                "path": str(Path(jobdef.source).parent) if jobdef.source else "",
            }
        )
    )
    return [sys.executable, "-m", "opus.execution.call", str(call)]


def typed_kwargs(
    jobdef: JobDefinition, env: dict[str, str], input_files: dict[str, list[str]]
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for pdef in jobdef.parameters:
        if pdef.name in env and pdef.name != RERUN:
            kwargs[pdef.name] = python_value(pdef, env[pdef.name])
    for used in jobdef.used:
        files = input_files.get(used.name, [])
        kwargs[used.name] = files if used.multiplicity != 1 else (files[0] if files else None)
    for gen in jobdef.generated:
        kwargs[gen.name] = gen.file_name
    return kwargs

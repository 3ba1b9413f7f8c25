"""Reuse of identical computations: a job of a deterministic definition whose values and
inputs are those of an earlier completed job of the same owner completes at once with
that job's results, instead of running (AMPEL's T2 configuration hash, extended to the
inputs' bytes).

The key is the SHA-256 of compact JSON with sorted keys: the definition and its version,
every parameter's value as the callable would get it (defaults included, so that giving
a default explicitly changes nothing; `rerun` left out), each input role's file names
and checksums (a unit may write the names it is given), the versions of the packages the
definition requires, and the owner's data rights (a partnership right changes what T0
keeps). Files a unit read from the data folder (its reference entities) are hashed
again before a reuse: a changed one means a new run; a job one of whose results was
invalidated is not reused. The reusing job's results are new entities of the same bytes
(hard links where the file system allows): in PROV each entity has one generating
activity, so the new job *used* the earlier results and generated its own, derived from
them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path

from sqlalchemy import Connection, select

from opus.config import Settings
from opus.execution.failures import JobFailure
from opus.ids import entity_qname, job_qname
from opus.jobdefs.model import RERUN, JobDefinition
from opus.jobdefs.params import parse_boolean, python_value
from opus.store import jobs as store
from opus.store.files import hash_file
from opus.store.objects import ObjectMissing, Storage, StoreUnavailable, copy_into
from provenance import store as prov
from provenance.model import Entity


def reuse_key(
    jobdef: JobDefinition,
    values: dict[str, str],
    inputs: list[tuple[str, store.EntityRecord]],
    rights: list[str] | None,
) -> str:
    typed: dict[str, object] = {}
    for p in jobdef.parameters:
        value = values.get(p.name, p.default)
        if p.name != RERUN and value is not None:
            typed[p.name] = python_value(p, value)
    files: dict[str, list[tuple[str, str]]] = {}
    for role, entity in inputs:
        files.setdefault(role, []).append((entity.file_name, entity.sha256))
    document = {
        "definition": jobdef.name,
        "version": jobdef.version,
        "values": typed,
        "inputs": {role: sorted(named) for role, named in files.items()},
        "packages": {m: _version(m) for m in sorted(jobdef.requires)},
        "rights": sorted(rights) if rights is not None else None,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def _version(module: str) -> str:
    """The installed version of the distribution that provides a module ('' if none)."""
    names = importlib.metadata.packages_distributions().get(module, [module])
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def references(conn: Connection, job_id: str) -> list[tuple[Entity, str]]:
    """The files of the data folder a job read (its reference entities), with their roles."""
    u, e = prov.used.c, prov.entities.c
    rows = conn.execute(
        select(e.id, e.name, e.content_type, e.size, e.sha256, e.kind, u.role)
        .join_from(prov.used, prov.entities, e.id == u.entity_id)
        .where(u.activity_id == job_qname(job_id), e.kind == "reference")
    )
    return [
        (Entity(id=r[0], name=r[1], content_type=r[2], size=r[3], sha256=r[4], kind=r[5]), r[6])
        for r in rows
    ]


def unchanged(settings: Settings, refs: list[tuple[Entity, str]]) -> bool:
    """Whether every reference file still has the checksum recorded (a table of a FITS
    file is named `path[HDU]`: the file is hashed)."""
    folder = settings.real_data_dir
    for entity, _ in refs:
        path = (folder / entity.name.split("[", 1)[0]) if folder else None
        if path is None or not path.is_file():
            return False
        stat = path.stat()
        if _checksum(str(path), stat.st_size, stat.st_mtime_ns) != entity.sha256:
            return False
    return True


@functools.lru_cache(maxsize=4096)
def _checksum(path: str, size: int, mtime_ns: int) -> str:
    """A file's SHA-256, hashed once per size and modification time."""
    return hash_file(Path(path))[0]


def invalidated(conn: Connection, job_id: str) -> bool:
    """Whether a result of the job was invalidated: such results are never reused (the
    job that made a wrong file runs again, even with the same values and inputs)."""
    g, i = prov.generations.c, prov.invalidations.c
    found = conn.execute(
        select(i.entity_id)
        .join_from(prov.invalidations, prov.generations, g.entity_id == i.entity_id)
        .where(g.activity_id == job_qname(job_id))
        .limit(1)
    ).first()
    return found is not None


def wants_rerun(values: dict[str, str]) -> bool:
    return RERUN in values and parse_boolean(values[RERUN])


def place_reused(
    storage: Storage,
    jobdef: JobDefinition,
    earlier: list[store.EntityRecord],
    workdir: Path,
) -> dict[str, str]:
    """The earlier job's result files put in this job's working folder, where the job
    would have written them; their relative paths -> the earlier entity's qname."""
    by_role = {g.name: g for g in jobdef.generated}
    placed: dict[str, str] = {}
    for entity in earlier:
        generated = by_role.get(entity.role)
        if generated is None:
            continue
        relative = entity.name if generated.is_pattern else generated.file_name
        target = workdir / relative
        if not target.resolve().is_relative_to(workdir.resolve()):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            copy_into(storage, entity.path, target)
        except (ObjectMissing, StoreUnavailable) as exc:
            raise JobFailure(f"the reused result {entity.name} cannot be read: {exc}") from None
        placed[relative] = entity_qname(entity.id)
    return placed


def reuse_note(earlier: store.JobRecord) -> str:
    return f"reused the results of {job_qname(earlier.id)} (same definition, values and inputs)"

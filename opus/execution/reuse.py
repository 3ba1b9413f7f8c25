"""Reuse of identical computations: a job of a deterministic definition whose values and
inputs are those of an earlier completed job of the same owner completes at once with
that job's results, instead of running (AMPEL's T2 configuration hash, extended to the
inputs' bytes).

The key is the SHA-256 of compact JSON with sorted keys: the definition and its version,
every parameter's value as the callable would get it (defaults included, so that giving
a default explicitly changes nothing; `rerun` left out), each input role's checksums, and
the owner's data rights (a partnership right changes what T0 keeps). The reusing job's
results are new entities of the same bytes (hard links where the file system allows):
in PROV each entity has one generating activity, so the new job *used* the earlier
results and generated its own, derived from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from opus.config import Settings
from opus.ids import entity_qname, job_qname
from opus.jobdefs.model import RERUN, JobDefinition
from opus.jobdefs.params import parse_boolean, python_value
from opus.store import jobs as store


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
    checksums: dict[str, list[str]] = {}
    for role, entity in inputs:
        checksums.setdefault(role, []).append(entity.sha256)
    document = {
        "definition": jobdef.name,
        "version": jobdef.version,
        "values": typed,
        "inputs": {role: sorted(sums) for role, sums in checksums.items()},
        "rights": sorted(rights) if rights is not None else None,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def wants_rerun(values: dict[str, str]) -> bool:
    return RERUN in values and parse_boolean(values[RERUN])


def place_reused(
    settings: Settings,
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
        source = settings.data_dir / entity.path
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        placed[relative] = entity_qname(entity.id)
    return placed


def reuse_note(earlier: store.JobRecord) -> str:
    return f"reused the results of {job_qname(earlier.id)} (same definition, values and inputs)"

"""Jobs made by jobs: the chunks of a chunked job and the steps of a pipeline.

A chunked job (a definition with `chunk_role`) splits its inputs in that role into
chunks of `chunk_size`, each a child job of the same definition run in parallel (the
TiDES `chunkyAssign` pattern); a pipeline queues its steps one after another, each
taking earlier steps' results as inputs. Either way the parent holds no runner while
its children run: it stays EXECUTING, marked as waiting (the sweep of silent runners
leaves it), and the runner that ends a child moves the parent on: the next step queued,
or the parent ended with its results (the chunks' results merged; the last step's) and
its provenance (it used its children's results and generated its own from them). With
two runners a parent that waited in one would leave one runner for all its chunks; two
such parents would deadlock.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from opus.config import Settings
from opus.execution.failures import JobFailure
from opus.execution.recording import Told, entity_of
from opus.execution.results import collect_results
from opus.execution.workspace import job_root
from opus.ids import entity_qname, job_qname, new_id
from opus.jobdefs.model import JobDefinition, Step
from opus.phases import FINAL, Phase
from opus.store import jobs as store
from opus.store.objects import ObjectMissing, StoreUnavailable, storage_of
from opus.timeutil import utcnow


@dataclass
class Ending:
    """How a waiting parent ends: its phase, results, what they came from, or why not."""

    phase: Phase
    results: list[store.EntityRecord]
    told: Told
    message: str | None = None


def chunks_of(jobdef: JobDefinition, parent_jobdef: str | None, inputs: Sequence[object]) -> int:
    """How many chunks the job splits into (0: it runs as one job; so does a chunk, whose
    parent is a job of the same definition)."""
    if jobdef.chunk_role is None or parent_jobdef == jobdef.name:
        return 0
    count = len(inputs)
    return (count + jobdef.chunk_size - 1) // jobdef.chunk_size if count > jobdef.chunk_size else 0


def fan_out(
    conn: Connection,
    jobdef: JobDefinition,
    job: store.JobRecord,
    parameters: list[store.ParameterValue],
    inputs: list[tuple[str, store.EntityRecord]],
) -> list[str]:
    """The job's chunks queued as its children (in the caller's transaction); their ids."""
    assert jobdef.chunk_role is not None
    split = [e for role, e in inputs if role == jobdef.chunk_role]
    others = [(role, e) for role, e in inputs if role != jobdef.chunk_role]
    size = jobdef.chunk_size
    parts = [split[i : i + size] for i in range(0, len(split), size)]
    ids = []
    for number, part in enumerate(parts, 1):
        chunk_inputs = others + [(jobdef.chunk_role, e) for e in part]
        label = f"{job.run_id or jobdef.name} chunk {number}/{len(parts)}"
        ids.append(_child(conn, job, jobdef.name, label, _values(parameters), chunk_inputs))
    store.wait_for_children(conn, job.id)
    return ids


def start_step(
    conn: Connection,
    pipeline: JobDefinition,
    job: store.JobRecord,
    parameters: list[store.ParameterValue],
    inputs: list[tuple[str, store.EntityRecord]],
    done: list[store.JobRecord],
    results_of: Callable[[str], list[store.EntityRecord]],
) -> str | None:
    """The pipeline's next step queued (None: every step has run)."""
    steps = pipeline.execution.pipeline or []
    if len(done) >= len(steps):
        return None
    step = steps[len(done)]
    own = _values(parameters)
    values = {k: own.get(v[1:], "") if v.startswith("$") else v for k, v in step.values.items()}
    step_inputs: list[tuple[str, store.EntityRecord]] = []
    for role, source in step.inputs.items():
        step_inputs += [(role, e) for e in _source(source, steps, done, inputs, results_of)]
    label = f"{job.run_id or pipeline.name}/{step.name}"
    child = _child(
        conn, job, step.jobdef, label, {k: v for k, v in values.items() if v}, step_inputs
    )
    store.wait_for_children(conn, job.id)
    return child


def _source(
    source: str,
    steps: list[Step],
    done: list[store.JobRecord],
    inputs: list[tuple[str, store.EntityRecord]],
    results_of: Callable[[str], list[store.EntityRecord]],
) -> list[store.EntityRecord]:
    if source.startswith("$"):
        return [e for role, e in inputs if role == source[1:]]
    step_name, _, role = source.partition(".")
    index = next((i for i, s in enumerate(steps) if s.name == step_name), None)
    if index is None or index >= len(done):
        raise JobFailure(f"pipeline input {source!r}: no earlier step {step_name!r}")
    return [e for e in results_of(done[index].id) if e.role == role]


def _values(parameters: list[store.ParameterValue]) -> dict[str, str]:
    return {p.name: p.value for p in parameters}


def _child(
    conn: Connection,
    parent: store.JobRecord,
    jobdef: str,
    label: str,
    values: dict[str, str],
    inputs: list[tuple[str, store.EntityRecord]],
) -> str:
    child_id = new_id()
    positions: dict[str, int] = {}
    rows = []
    for role, entity in inputs:
        rows.append(dict(role=role, position=positions.get(role, 0), entity_id=entity.id))
        positions[role] = positions.get(role, 0) + 1
    store.insert_job(
        conn,
        store.new_job(
            id=child_id,
            jobdef=jobdef,
            owner=parent.owner,
            phase=Phase.QUEUED,
            creation_time=utcnow(),
            execution_duration=parent.execution_duration,
            destruction=parent.destruction,
            run_id=label[:256],
            parent_id=parent.id,
        ),
        [dict(name=k, position=0, value=v, by_reference=False) for k, v in values.items()],
        rows,
    )
    return child_id


def failed_child(done: list[store.JobRecord]) -> store.JobRecord | None:
    return next((c for c in done if c.phase != Phase.COMPLETED), None)


def all_final(kids: list[store.JobRecord]) -> bool:
    return all(c.phase in FINAL for c in kids)


def merge_chunks(
    settings: Settings,
    jobdef: JobDefinition,
    parent_id: str,
    kids: list[store.JobRecord],
    results_of: Callable[[str], list[store.EntityRecord]],
) -> Ending:
    """The parent's results made from its chunks': a table (CSV, TSV) is their rows under
    one header, a JSON list their items, files of a pattern are gathered."""
    found = [e for kid in kids for e in results_of(kid.id)]
    ending = _gather(settings, jobdef, parent_id, found, "chunk", whole=False)
    ending.told.comments.append(
        f"merged from {len(kids)} chunks: " + ", ".join(job_qname(k.id) for k in kids)
    )
    return ending


def last_step_results(
    settings: Settings,
    pipeline: JobDefinition,
    parent_id: str,
    last: store.JobRecord,
    results_of: Callable[[str], list[store.EntityRecord]],
) -> Ending:
    """The pipeline's results: those of its last step, in the roles the pipeline declares."""
    return _gather(settings, pipeline, parent_id, results_of(last.id), "step", whole=True)


def _gather(
    settings: Settings,
    jobdef: JobDefinition,
    parent_id: str,
    found: list[store.EntityRecord],
    kind: str,
    whole: bool,
) -> Ending:
    """The parent's results from its children's (used in roles `<kind>_<role>`), each
    derived from those it was made of; `whole`: files linked, not merged."""
    workdir = job_root(settings, parent_id) / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    told = Told()
    declared = {g.name: g for g in jobdef.generated}
    for entity in found:
        qname = entity_qname(entity.id)
        told.used.append((entity_of(entity), f"{kind}_{entity.role}"))
        told.names[qname] = [qname]
        generated = declared.get(entity.role)
        if generated is None:
            continue
        name = entity.name if generated.is_pattern else generated.file_name
        source = _local(settings, entity, workdir.parent / "children")
        _append(source, workdir / name, whole or generated.is_pattern)
        result = entity.name if generated.is_pattern else generated.name
        told.sources.setdefault(result, []).append(qname)
    results = collect_results(settings, jobdef, parent_id, workdir)
    return Ending(Phase.COMPLETED, results, told)


def _local(settings: Settings, entity: store.EntityRecord, folder: Path) -> Path:
    """A child's result as a file of this host: in place in the data folder, else
    fetched from the object store into `folder` (the parent's)."""
    storage = storage_of(settings)
    found = storage.local(entity.path)
    if found is not None:
        return found
    copy = folder / entity.id
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        storage.fetch(entity.path, copy)
    except (ObjectMissing, StoreUnavailable) as exc:
        raise JobFailure(
            f"the result {entity.name} of {entity.job_id} cannot be read: {exc}"
        ) from None
    return copy


def _append(source: Path, target: Path, whole: bool) -> None:
    """Add a chunk's file to the merged one (a link or copy for a file of its own)."""
    if not target.resolve().is_relative_to(target.parent.resolve()):
        raise JobFailure(f"a chunk's result {target.name!r} is outside the job's folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    if whole or not target.exists():
        if target.exists():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return
    suffix = target.suffix.lower()
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        with source.open(newline="") as handle:
            rows = list(csv.reader(handle, delimiter=delimiter))[1:]
        # a linked first chunk must not be appended to in place: copy it first
        _own_copy(target)
        with target.open("a", newline="") as handle:
            csv.writer(handle, delimiter=delimiter).writerows(rows)
    elif suffix == ".json":
        merged = json.loads(target.read_text())
        more = json.loads(source.read_text())
        if not isinstance(merged, list) or not isinstance(more, list):
            raise JobFailure(f"chunks' {target.name} are not JSON lists: they cannot be merged")
        target.unlink()
        target.write_text(json.dumps(merged + more, indent=1))
    else:
        raise JobFailure(f"chunks' {target.name}: only CSV, TSV and JSON lists are merged")


def _own_copy(target: Path) -> None:
    if target.stat().st_nlink > 1:
        data = target.read_bytes()
        target.unlink()
        target.write_bytes(data)

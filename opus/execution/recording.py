"""A job as a ProvDM activity: what the runner records for every job it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from opus import __version__
from opus.ids import SCHEDULE_ATTRIBUTE, entity_qname, job_qname, local_name, user_qname
from opus.jobdefs.model import JobDefinition
from opus.store import jobs as store
from opus.units.manifest import Manifest
from provenance import capture
from provenance.model import (
    Activity,
    ActivityDescription,
    Agent,
    Entity,
    Parameter,
    RoleDescription,
)


def entity_of(row: store.EntityRecord) -> Entity:
    return Entity(
        id=entity_qname(row.id),
        name=row.file_name,
        location=row.location or f"/store/{row.id}",
        content_type=row.content_type,
        size=row.size,
        sha256=row.sha256,
        generated_at=row.creation_time if row.origin == "result" else None,
        kind=row.origin,
    )


def _context(
    worker: str, code: str | None, container: str, rights: list[str] | None
) -> dict[str, str]:
    found = capture.context(worker, code, container=container)
    if rights is not None:
        found["data_rights"] = ",".join(rights) or "none"
    return found


def job_activity(
    job: store.JobRecord,
    jobdef: JobDefinition,
    parameters: list[store.ParameterValue],
    inputs: list[tuple[str, store.EntityRecord]],
    results: list[store.EntityRecord],
    status: str,
    end_time: datetime,
    message: str | None,
    worker: str,
    container: str = "",
    rights: list[str] | None = None,
    told: Told | None = None,
) -> Activity:
    """The job as an activity; `rights` are the data rights it ran with (None: an
    anonymous job, which has none), recorded in its context; `told`, what its unit's
    manifest and the server add (reference files, derivations, counts, context)."""
    agents = [
        (Agent(user_qname(job.owner), "Person", job.owner or "anonymous"), "owner"),
        (
            Agent(
                f"opus:opus_{local_name(__version__)}", "SoftwareAgent", "OPUS", version=__version__
            ),
            "server",
        ),
        (
            Agent(
                f"opus:worker_{local_name(worker.rpartition(':')[0] or worker)}",
                "SoftwareAgent",
                f"OPUS worker on {worker.rpartition(':')[0] or worker}",
                version=__version__,
            ),
            "worker",
        ),
    ]
    if jobdef.contact_name or jobdef.contact_email:
        name = jobdef.contact_name or jobdef.contact_email
        agents.append(
            (
                Agent(
                    f"opus:contact_{local_name(name)}",
                    "Person",
                    name,
                    email=jobdef.contact_email or None,
                ),
                "contact",
            )
        )
    values = {p.name: p.value for p in parameters}
    recorded = [
        Parameter(
            name=p.name,
            value=values[p.name],
            datatype=p.datatype,
            unit=p.unit,
            ucd=p.ucd,
            min=p.min,
            max=p.max,
            options=",".join(p.options) or None,
            description=p.description or None,
        )
        for p in jobdef.parameters
        if p.name in values
    ]
    description = ActivityDescription(
        id=f"opus:jobdef_{local_name(jobdef.name)}_{local_name(jobdef.version or '0')}",
        name=jobdef.name,
        version=jobdef.version,
        type=jobdef.type,
        subtype=jobdef.subtype,
        doculink=jobdef.doculink,
        description=jobdef.description,
        used=tuple(
            RoleDescription(u.name, u.description, str(u.multiplicity), u.content_type)
            for u in jobdef.used
        ),
        generated=tuple(
            RoleDescription(g.name, g.description, str(g.multiplicity), g.content_type)
            for g in jobdef.generated
        ),
    )
    code = str(Path(jobdef.source).parent) if jobdef.source else None
    told = told or Told()
    context = _context(worker, code, container, rights) | told.context
    comment = "; ".join(filter(None, [message, *told.comments])) or None
    return Activity(
        id=job_qname(job.id),
        name=(jobdef.name + (f" ({job.run_id})" if job.run_id else ""))[:256],
        description=description,
        start_time=job.start_time,
        end_time=end_time,
        status=status,
        comment=comment,
        parameters=recorded,
        used=[(entity_of(e), role) for role, e in inputs] + told.used,
        generated=[(entity_of(r), r.role) for r in results],
        agents=agents,
        context=context,
        derivations=told.derivations(inputs, results),
        replaces=job_qname(job.replaces) if job.replaces else None,
        # a schedule's run was informed by the run before it, and names its schedule
        informed_by=[job_qname(job.informed_by)] if job.informed_by else [],
        attributes={SCHEDULE_ATTRIBUTE: job.schedule_id} if job.schedule_id else {},
    )


@dataclass
class Told:
    """What provenance cannot see from the job's inputs and results alone: entities used
    beyond its inputs (reference files, the results of a reused job or of its chunks), which
    result came from which input (result file name -> input file names or used ids), and
    words for its comment and context."""

    used: list[tuple[Entity, str]] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)  # result file -> sources
    # source name -> the entities it stands for (a file's several tables: each one read)
    names: dict[str, list[str]] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)

    def derivations(
        self, inputs: list[tuple[str, store.EntityRecord]], results: list[store.EntityRecord]
    ) -> list[tuple[str, str]] | None:
        """Each result from what it was made of: as told, else from every input and every
        entity used beyond them; None when nothing was told (every result from every input)."""
        if not self.sources and not self.used:
            return None
        everything = [entity_qname(e.id) for _, e in inputs] + [e.id for e, _ in self.used]
        pairs: list[tuple[str, str]] = []
        for result in results:
            told = self.sources.get(result.name) or self.sources.get(result.file_name)
            sources = [i for s in told or [] for i in self.names.get(s, [])] or everything
            pairs += [(entity_qname(result.id), source) for source in sources]
        return pairs


def told_by(
    manifest: Manifest,
    inputs: list[tuple[str, store.EntityRecord]],
    input_files: dict[str, list[str]],
    result_files: dict[str, str],
) -> Told:
    """A unit's manifest as provenance: its reference files as entities (their id from the
    checksum, so that every job reading a file names the same entity), its derivations
    on the job's own entity ids. `result_files`: result file name (as the unit wrote it)
    -> the result's name."""
    told = Told(context={f"unit:{k}": v for k, v in manifest.context.items()})
    names: dict[str, list[str]] = {}
    placed = {role: iter(files) for role, files in input_files.items()}
    for role, record in inputs:
        name = next(placed.get(role, iter(())), None)
        if name is not None:
            names[name] = [entity_qname(record.id)]
    for used in manifest.used:
        local = f"ref_{used.sha256[:24]}" + (f"_{local_name(used.hdu)}" if used.hdu else "")
        entity = Entity(
            id=f"opus:{local}",
            name=used.path + (f"[{used.hdu}]" if used.hdu else ""),
            content_type=used.content_type,
            size=used.size,
            sha256=used.sha256,
            kind="reference",
        )
        told.used.append((entity, used.role))
        names.setdefault(used.path, []).append(entity.id)
    told.names = names
    told.sources = {result_files.get(k, k): v for k, v in manifest.derivations.items()}
    told.comments = [
        f"{name}: {count.value}" + (f" ({count.why})" if count.why else "")
        for name, count in manifest.counts.items()
    ]
    return told

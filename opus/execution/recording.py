"""A job as a ProvDM activity: what the runner records for every job it runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from opus import __version__
from opus.ids import entity_qname, job_qname, local_name, user_qname
from opus.jobdefs.model import JobDefinition
from opus.store import jobs as store
from provenance import capture
from provenance.model import (
    Activity,
    ActivityDescription,
    Agent,
    Entity,
    Parameter,
    RoleDescription,
)


def _entity(row: store.EntityRecord) -> Entity:
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
) -> Activity:
    """The job as an activity; `rights` are the data rights it ran with (None: an
    anonymous job, which has none), recorded in its context."""
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
    return Activity(
        id=job_qname(job.id),
        name=(jobdef.name + (f" ({job.run_id})" if job.run_id else ""))[:256],
        description=description,
        start_time=job.start_time,
        end_time=end_time,
        status=status,
        comment=message,
        parameters=recorded,
        used=[(_entity(e), role) for role, e in inputs],
        generated=[(_entity(r), r.role) for r in results],
        agents=agents,
        context=_context(worker, code, container, rights),
    )

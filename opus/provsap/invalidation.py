"""Invalidating an entity found wrong, and what was made from it.

The invalidation is recorded in provenance (PROV wasInvalidatedBy an activity of its
own, `opus:inval_<id>`, whose comment is the reason and whose agent is who invalidated
it); what is downstream is the lineage walked FORTH in SQL (`provenance.query`): every
entity and job made from the entity, in dependency order. Only administrators invalidate:
an invalidation speaks for the server about data that may be anyone's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from opus.auth import Caller
from opus.errors import Conflict, Forbidden, NotFound, ParameterError
from opus.ids import (
    JOB_PREFIX,
    entity_qname,
    invalidation_qname,
    is_id,
    namespace_uri,
    new_id,
    public_base,
    qualified_name,
    user_qname,
)
from opus.jobdefs.params import check_text
from opus.store import jobs as job_store
from opus.store.db import Database
from opus.timeutil import format_datetime, utcnow
from provenance import capture, query
from provenance import store as prov
from provenance.model import Agent, Invalidation

MAX_REASON = 2000  # characters
# who invalidates from the server's machine without naming a user (`opus prov invalidate`)
OPERATOR = Agent("opus:operator", "Person", "the server's operator")


@dataclass(frozen=True)
class Recorded:
    """An entity's invalidation as recorded."""

    activity: str
    time: datetime | None
    reason: str
    agents: list[str]


@dataclass(frozen=True)
class Affected:
    """An activity downstream: a job's (its definition and phase; None once destroyed)."""

    activity: str
    job_id: str | None
    jobdef: str | None
    phase: str | None


@dataclass(frozen=True)
class Report:
    """An entity, its invalidation if any, and what is downstream of it (in order)."""

    entity: str
    invalidation: Recorded | None
    entities: list[str]
    jobs: list[Affected]

    def as_json(self, base: str) -> dict[str, Any]:
        """The report as JSON, ids as qualified names (`prefix` says what `opus` is)."""
        ended = self.invalidation
        return {
            "prefix": {"opus": namespace_uri(base)},
            "entity": self.entity,
            "invalidation": None
            if ended is None
            else {
                "activity": ended.activity,
                "time": format_datetime(ended.time),
                "reason": ended.reason,
                "agents": ended.agents,
            },
            "downstream": {
                "entities": self.entities,
                "jobs": [
                    {
                        "activity": job.activity,
                        "job": job.job_id,
                        "jobdef": job.jobdef,
                        "phase": job.phase,
                        "url": f"{base}/rest/{quote(job.jobdef, safe='')}/{job.job_id}"
                        if job.jobdef
                        else None,
                    }
                    for job in self.jobs
                ],
            },
        }


def parse(params: Mapping[str, Sequence[str]]) -> tuple[str, str]:
    """ID and REASON of an invalidation request (names upper-cased), each given once."""
    found = []
    for name in ("ID", "REASON"):
        values = [v.strip() for v in params.get(name, []) if v.strip()]
        if len(values) > 1:
            raise ParameterError(name, "given more than once")
        found.append(values[0] if values else "")
    return found[0], found[1]


class InvalidationService:
    def __init__(self, db: Database, public_url: str = "") -> None:
        self.db = db
        self.public_url = public_url

    def base(self, request_base: str) -> str:
        return public_base(self.public_url or request_base)

    def invalidate(self, caller: Caller, given: str, reason: str, request_base: str) -> Report:
        """Record that the entity `given` (a qualified name, its URI or a bare id) is
        invalid, and report what is downstream of it."""
        _check_admin(caller)
        if not reason:
            raise ParameterError("REASON", "missing: say why the entity is wrong")
        if len(reason) > MAX_REASON:
            raise ParameterError("REASON", f"longer than {MAX_REASON} characters")
        check_text("REASON", reason)
        entity = self.entity(given, self.base(request_base))
        agent = Agent(user_qname(caller.name), "Person", caller.name) if caller.name else OPERATOR
        ended = Invalidation(entity, invalidation_qname(new_id()), utcnow(), reason, agent)
        try:
            with self.db.write() as conn:
                recorded = capture.invalidate(conn, ended)
        except IntegrityError:  # invalidated at the same moment by another request
            recorded = False
        with self.db.read() as conn:
            found = report(conn, entity)
        if not recorded and found.invalidation is not None:
            raise Conflict(
                f"{entity} was invalidated already, at {format_datetime(found.invalidation.time)}"
                f": {found.invalidation.reason}"
            )
        return found

    def entity(self, given: str, base: str) -> str:
        """The qualified name of the recorded entity `given` names."""
        if not given:
            raise ParameterError("ID", "missing: give the id of the entity")
        name = qualified_name(given, base)
        name = entity_qname(name) if is_id(name) else name
        with self.db.read() as conn:
            known = query.known_ids(conn, [name])
            if not known:
                raise NotFound(f"no provenance entity {given!r}")
            if not _present(conn, prov.entities, name):
                raise ParameterError("ID", f"{given!r} is an activity or an agent, not an entity")
        return name


def _check_admin(caller: Caller) -> None:
    if not caller.admin:
        raise Forbidden("only an administrator may invalidate entities and re-run their lineage")


def _present(conn: Connection, table: Any, name: str) -> bool:
    return conn.execute(select(table.c.id).where(table.c.id == name)).first() is not None


def recorded(conn: Connection, entity: str) -> Recorded | None:
    """The entity's invalidation: its activity, time, reason and agents."""
    ended = query.invalidations(conn, [entity]).get(entity)
    if ended is None:
        return None
    activity, time = ended
    a, s = prov.activities.c, prov.associations.c
    reason = conn.execute(select(a.comment).where(a.id == activity)).scalar()
    agents = conn.execute(select(s.agent_id).where(s.activity_id == activity).order_by(s.agent_id))
    return Recorded(activity, time, reason or "", list(agents.scalars()))


def report(conn: Connection, entity: str) -> Report:
    """The entity, its invalidation, and every entity and job downstream of it."""
    found = query.downstream(conn, [entity])
    local = {a: a[len(JOB_PREFIX) :] for a in found.activities if a.startswith(JOB_PREFIX)}
    jobs = job_store.jobs.c
    rows = conn.execute(
        select(jobs.id, jobs.jobdef, jobs.phase).where(jobs.id.in_(sorted(local.values())))
    )
    known = {row[0]: (row[1], row[2]) for row in rows}
    affected = []
    for activity in found.activities:
        job_id = local.get(activity)
        jobdef, phase = known.get(job_id or "", (None, None))
        affected.append(Affected(activity, job_id, jobdef, phase))
    return Report(entity, recorded(conn, entity), found.entities, affected)

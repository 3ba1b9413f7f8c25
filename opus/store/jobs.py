"""Reading and writing jobs, their parameters, inputs and results (SQLAlchemy Core)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from opus.ids import new_id
from opus.phases import ENDINGS, FINAL, TRANSITIONS, Phase
from opus.store import schema
from opus.store.db import Database
from opus.timeutil import utcnow

jobs: Table = schema.jobs  # type: ignore[assignment]
job_parameters: Table = schema.job_parameters  # type: ignore[assignment]
entities: Table = schema.entities  # type: ignore[assignment]
job_inputs: Table = schema.job_inputs  # type: ignore[assignment]
job_shares: Table = schema.job_shares  # type: ignore[assignment]


@dataclass(frozen=True)
class JobRecord:
    id: str
    jobdef: str
    run_id: str | None
    owner: str | None
    phase: str
    creation_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    execution_duration: int
    destruction: datetime
    quote: datetime | None
    error_message: str | None
    error_type: str | None
    worker: str | None
    dispatch_failed: bool
    heartbeat: datetime | None
    attempts: int
    parent_id: str | None = None
    reuse_key: str | None = None
    schedule_id: str | None = None
    informed_by: str | None = None
    replaces: str | None = None

    @property
    def error(self) -> str | None:
        """The UWS error summary's message: shown for a job that ended in ERROR or ABORTED."""
        if self.phase in (Phase.ERROR, Phase.ABORTED):
            return self.error_message or None
        return None


@dataclass(frozen=True)
class JobOrigin:
    """What made a job, beside its owner's request: a schedule's tick (and the schedule's
    previous run), or the re-run of a job one of whose inputs was invalidated."""

    schedule_id: str | None = None
    informed_by: str | None = None
    replaces: str | None = None


@dataclass(frozen=True)
class ParameterValue:
    name: str
    value: str
    by_reference: bool


@dataclass(frozen=True)
class EntityRecord:
    id: str
    job_id: str | None
    name: str
    role: str
    origin: str
    path: str
    file_name: str
    content_type: str
    size: int
    sha256: str
    location: str | None
    creation_time: datetime


def new_entity(
    *,
    job_id: str,
    name: str,
    origin: str,
    path: str,
    file_name: str,
    content_type: str,
    sha256: str,
    size: int,
    role: str | None = None,
    location: str | None = None,
    id: str | None = None,
) -> EntityRecord:
    """A stored file of a job (origin: upload, download or result), created now."""
    return EntityRecord(
        id=id or new_id(),
        job_id=job_id,
        name=name,
        role=role or name,
        origin=origin,
        path=path,
        file_name=file_name,
        content_type=content_type,
        size=size,
        sha256=sha256,
        location=location,
        creation_time=utcnow(),
    )


def new_job(
    *,
    id: str,
    jobdef: str,
    owner: str | None,
    phase: str,
    creation_time: datetime,
    execution_duration: int,
    destruction: datetime,
    run_id: str | None = None,
    quote: datetime | None = None,
    parent_id: str | None = None,
    origin: JobOrigin | None = None,
) -> dict[str, Any]:
    """The row of a job not yet run (the one constructor of a job's row)."""
    origin = origin or JobOrigin()
    return dict(
        id=id,
        jobdef=jobdef,
        run_id=run_id,
        owner=owner,
        phase=str(phase),
        creation_time=creation_time,
        start_time=None,
        end_time=None,
        execution_duration=execution_duration,
        destruction=destruction,
        quote=quote,
        error_message=None,
        error_type=None,
        worker=None,
        dispatch_failed=False,
        heartbeat=None,
        attempts=0,
        parent_id=parent_id,
        reuse_key=None,
        schedule_id=origin.schedule_id,
        informed_by=origin.informed_by,
        replaces=origin.replaces,
    )


def _job(row: Any) -> JobRecord:
    return JobRecord(**row._mapping)


def _entity(row: Any) -> EntityRecord:
    return EntityRecord(**row._mapping)


def insert_job(
    conn: Connection,
    job: dict[str, Any],
    parameters: Sequence[dict[str, Any]],
    inputs: Sequence[dict[str, Any]] = (),
) -> None:
    conn.execute(insert(jobs), [job])
    if parameters:
        conn.execute(insert(job_parameters), [dict(p, job_id=job["id"]) for p in parameters])
    if inputs:
        conn.execute(insert(job_inputs), [dict(i, job_id=job["id"]) for i in inputs])


def get_job(conn: Connection, job_id: str) -> JobRecord | None:
    row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
    return _job(row) if row else None


PHASE_QUERY = select(jobs.c.jobdef, jobs.c.phase).where(jobs.c.id == bindparam("job_id"))
_PHASE_OWNER = select(jobs.c.jobdef, jobs.c.phase, jobs.c.owner).where(
    jobs.c.id == bindparam("job_id")
)


def phase_reader(db: Database) -> Callable[[str], tuple[str, str, str | None] | None]:
    """(jobdef, phase, owner) of a job outside any transaction: the read behind /phase and
    WAIT."""
    query = db.prepare(_PHASE_OWNER)

    def read(job_id: str) -> tuple[str, str, str | None] | None:
        row = query.first(job_id=job_id)
        return (row[0], row[1], row[2]) if row else None

    return read


def get_phase(conn: Connection, job_id: str) -> tuple[str, str] | None:
    """(jobdef, phase) of a job, inside a transaction."""
    row = conn.execute(PHASE_QUERY, {"job_id": job_id}).first()
    return (row[0], row[1]) if row else None


def _list_filter(
    query: Select[Any],
    jobdef: str,
    phases: Sequence[str],
    after: datetime | None,
    visible: ColumnElement[bool] | None,
) -> Select[Any]:
    """UWS job list filters: PHASE (union; ARCHIVED only when asked) AND AFTER, among the
    jobs the caller may see (`visible`, from opus.auth)."""
    query = query.where(jobs.c.jobdef == jobdef)
    if phases:
        query = query.where(jobs.c.phase.in_(phases))
    else:
        query = query.where(jobs.c.phase != Phase.ARCHIVED)
    if after is not None:
        query = query.where(jobs.c.creation_time > after)
    if visible is not None:
        query = query.where(visible)
    return query


def count_jobs(
    conn: Connection,
    jobdef: str,
    phases: Sequence[str] = (),
    after: datetime | None = None,
    visible: ColumnElement[bool] | None = None,
) -> int:
    query = _list_filter(select(func.count()).select_from(jobs), jobdef, phases, after, visible)
    return int(conn.execute(query).scalar_one())


def list_jobs(
    conn: Connection,
    jobdef: str,
    phases: Sequence[str] = (),
    after: datetime | None = None,
    last: int | None = None,
    visible: ColumnElement[bool] | None = None,
) -> list[JobRecord]:
    """The filtered job list, oldest first; with LAST, the newest `last`, newest first."""
    query = _list_filter(select(jobs), jobdef, phases, after, visible)
    if last is not None:
        query = query.order_by(jobs.c.creation_time.desc(), jobs.c.id.desc()).limit(last)
    else:
        query = query.order_by(jobs.c.creation_time, jobs.c.id)
    return [_job(row) for row in conn.execute(query)]


def page_of_jobs(
    conn: Connection,
    jobdefs: Sequence[str],
    phase: str | None,
    visible: ColumnElement[bool],
    limit: int,
    start: tuple[datetime, str] | None = None,
    oldest_first: bool = False,
) -> list[JobRecord]:
    """`limit` jobs of these definitions (and phase), newest (or oldest) first, after the
    (creation time, id) given in that order: a page that the next begins where it ended
    (keyset paging: a page deep in 10,000 jobs costs what the first does)."""
    query = select(jobs).where(jobs.c.jobdef.in_(list(jobdefs)), visible)
    if phase:
        query = query.where(jobs.c.phase == phase)
    time, key = jobs.c.creation_time, jobs.c.id
    if start is not None:
        at, job_id = start
        if oldest_first:
            query = query.where(or_(time > at, (time == at) & (key > job_id)))
        else:
            query = query.where(or_(time < at, (time == at) & (key < job_id)))
    order = (time.asc(), key.asc()) if oldest_first else (time.desc(), key.desc())
    query = query.order_by(*order).limit(limit)
    return [_job(row) for row in conn.execute(query)]


def _may_leave(transition: str) -> ColumnElement[bool]:
    """The job is in a phase the transition may leave: `phase = X` when there is one (the
    runner's claim and finish, on every job's path), else `phase IN (...)`."""
    leaves = sorted(str(p) for p in TRANSITIONS[transition][0])
    return jobs.c.phase == leaves[0] if len(leaves) == 1 else jobs.c.phase.in_(leaves)


def _move(conn: Connection, transition: str, job_id: str, **fields: Any) -> bool:
    """Apply a named transition to a job still in a phase it may leave; True if it moved."""
    to = TRANSITIONS[transition][1]
    assert to is not None
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, _may_leave(transition))
        .values(phase=str(to), **fields)
    )
    return bool(result.rowcount)


def queue(conn: Connection, job_id: str, quote: datetime | None) -> bool:
    """PHASE=RUN: a PENDING (or HELD) job goes to QUEUED."""
    return _move(conn, "queue", job_id, quote=quote)


def abort(conn: Connection, job_id: str, now: datetime, message: str) -> bool:
    """PHASE=ABORT: a job not yet ended goes to ABORTED."""
    return _move(conn, "abort", job_id, end_time=now, error_message=message, error_type="fatal")


def requeue_lost(conn: Connection, job_id: str) -> bool:
    """An EXECUTING job whose runner is gone goes back to QUEUED, to run once more."""
    return _move(conn, "requeue_lost", job_id, start_time=None, worker=None, heartbeat=None)


def fail_lost(conn: Connection, job_id: str, now: datetime, message: str) -> bool:
    """An EXECUTING job whose runner is gone ends in ERROR."""
    return _move(
        conn, "fail_lost", job_id, end_time=now, error_message=message, error_type="transient"
    )


# The runner's statements, built once: each job runs them, and building one costs twice
# what running it does (SQLAlchemy coerces and keys a new statement at every call).
_CLAIM = (
    update(jobs)
    .where(jobs.c.id == bindparam("claimed_id"), _may_leave("claim"))
    .values(
        phase=str(TRANSITIONS["claim"][1]),
        attempts=jobs.c.attempts + 1,
        start_time=bindparam("claimed_at"),
        heartbeat=bindparam("claimed_at"),
        worker=bindparam("claimed_by"),
    )
    .returning(*jobs.c)
)
_FINISH = (
    update(jobs)
    .where(jobs.c.id == bindparam("ended_id"), _may_leave("finish"))
    .values(
        phase=bindparam("ended_phase"),
        end_time=bindparam("ended_at"),
        error_message=bindparam("ended_error_message"),
        error_type=bindparam("ended_error_type"),
    )
)
_CLAIMED = _CLAIM.cte("claimed")
_CLAIM_WITH_PARAMETERS = (
    select(
        *_CLAIMED.c,
        job_parameters.c.name.label("parameter_name"),
        job_parameters.c.value.label("parameter_value"),
        job_parameters.c.by_reference.label("parameter_by_reference"),
    )
    .select_from(_CLAIMED.outerjoin(job_parameters, job_parameters.c.job_id == _CLAIMED.c.id))
    .order_by(job_parameters.c.name, job_parameters.c.position)
)
_PARAMETERS = (
    select(job_parameters.c.name, job_parameters.c.value, job_parameters.c.by_reference)
    .where(job_parameters.c.job_id == bindparam("job_id"))
    .order_by(job_parameters.c.name, job_parameters.c.position)
)


def claim(conn: Connection, job_id: str, now: datetime, worker: str) -> JobRecord | None:
    """A runner takes a QUEUED job: EXECUTING, and the job returned; None if it was not
    QUEUED (any more): a job dispatched twice runs once."""
    row = conn.execute(
        _CLAIM, {"claimed_id": job_id, "claimed_at": now, "claimed_by": worker}
    ).first()
    return _job(row) if row else None


def claim_with_parameters(
    conn: Connection, job_id: str, now: datetime, worker: str
) -> tuple[JobRecord, list[ParameterValue]] | None:
    """`claim`, and the job's parameters read in the same round trip on PostgreSQL (the
    claim a data-modifying CTE joined to them); on SQLite, whose WITH holds no UPDATE and
    whose statements cost no round trip, one after the other."""
    values = {"claimed_id": job_id, "claimed_at": now, "claimed_by": worker}
    if conn.dialect.name != "postgresql":
        job = claim(conn, job_id, now, worker)
        return None if job is None else (job, get_parameters(conn, job_id))
    rows = conn.execute(_CLAIM_WITH_PARAMETERS, values).all()
    if not rows:
        return None
    width = len(jobs.c)
    job = JobRecord(**dict(zip(jobs.c.keys(), rows[0][:width], strict=True)))
    found = [ParameterValue(r[width], r[width + 1], bool(r[width + 2])) for r in rows]
    return job, [p for p in found if p.name is not None]


def finish(
    conn: Connection,
    job_id: str,
    phase: Phase,
    now: datetime,
    error_message: str | None = None,
    error_type: str | None = None,
) -> bool:
    """The runner ends an EXECUTING job in one of ENDINGS (COMPLETED, or ERROR saying why);
    False if it was not EXECUTING (any more: aborted, destroyed, or lost)."""
    assert phase in ENDINGS
    result = conn.execute(
        _FINISH,
        {
            "ended_id": job_id,
            "ended_phase": str(phase),
            "ended_at": now,
            "ended_error_message": error_message,
            "ended_error_type": error_type,
        },
    )
    return bool(result.rowcount)


def set_execution_duration(conn: Connection, job_id: str, seconds: int) -> bool:
    """Only while PENDING; False if the job is no longer PENDING."""
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.phase == Phase.PENDING)
        .values(execution_duration=seconds)
    )
    return bool(result.rowcount)


def set_run_id(conn: Connection, job_id: str, run_id: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(run_id=run_id))


def set_destruction(conn: Connection, job_id: str, when: datetime) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(destruction=when))


def beat(conn: Connection, job_id: str, now: datetime) -> None:
    """The job's runner is alive (the sweep ends jobs whose runner stopped beating)."""
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(heartbeat=now))


def mark_dispatch_failed(conn: Connection, job_id: str, failed: bool) -> None:
    """Whether the sweep must send the job to the broker again."""
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(dispatch_failed=failed))


def get_parameters(conn: Connection, job_id: str) -> list[ParameterValue]:
    rows = conn.execute(_PARAMETERS, {"job_id": job_id})
    return [ParameterValue(r[0], r[1], bool(r[2])) for r in rows]


def replace_parameters(conn: Connection, job_id: str, values: Sequence[dict[str, Any]]) -> None:
    """Set the given parameters (each name replaces all its earlier values)."""
    names = {v["name"] for v in values}
    conn.execute(
        delete(job_parameters).where(
            job_parameters.c.job_id == job_id, job_parameters.c.name.in_(names)
        )
    )
    if values:
        conn.execute(insert(job_parameters), [dict(v, job_id=job_id) for v in values])


def replace_inputs(
    conn: Connection, job_id: str, roles: Iterable[str], values: Sequence[dict[str, Any]]
) -> None:
    """Set the inputs of the given roles (a role given by URL has none until downloaded)."""
    roles = set(roles)
    conn.execute(
        delete(job_inputs).where(job_inputs.c.job_id == job_id, job_inputs.c.role.in_(roles))
    )
    if values:
        conn.execute(insert(job_inputs), [dict(v, job_id=job_id) for v in values])


def get_inputs(conn: Connection, job_id: str) -> list[tuple[str, EntityRecord]]:
    rows = conn.execute(
        select(job_inputs.c.role.label("input_role"), entities)
        .join(entities, entities.c.id == job_inputs.c.entity_id)
        .where(job_inputs.c.job_id == job_id)
        .order_by(job_inputs.c.role, job_inputs.c.position)
    )
    found = []
    for row in rows:
        fields = dict(row._mapping)
        found.append((fields.pop("input_role"), EntityRecord(**fields)))
    return found


def insert_entities(conn: Connection, records: Sequence[EntityRecord]) -> None:
    if records:
        conn.execute(insert(entities), [vars(r) for r in records])


def get_entity(
    conn: Connection, entity_id: str, visible: ColumnElement[bool] | None = None
) -> EntityRecord | None:
    """The entity, if it exists (and meets `visible`, a condition from opus.auth)."""
    query = select(entities).where(entities.c.id == entity_id)
    if visible is not None:
        query = query.where(visible)
    row = conn.execute(query).first()
    return _entity(row) if row else None


def recent_results(conn: Connection, owner: str, limit: int) -> list[tuple[EntityRecord, str]]:
    """The newest results of the owner's jobs, each with its job's definition (what a
    form offers as inputs)."""
    query = (
        select(entities, jobs.c.jobdef)
        .join(jobs, jobs.c.id == entities.c.job_id)
        .where(jobs.c.owner == owner, entities.c.origin == "result")
        .order_by(entities.c.creation_time.desc(), entities.c.id)
        .limit(limit)
    )
    found = []
    for row in conn.execute(query):
        *values, jobdef = row
        found.append((EntityRecord(**dict(zip(entities.c.keys(), values, strict=True))), jobdef))
    return found


def get_results(conn: Connection, job_id: str) -> list[EntityRecord]:
    rows = conn.execute(
        select(entities)
        .where(entities.c.job_id == job_id, entities.c.origin == "result")
        .order_by(entities.c.name)
    )
    return [_entity(r) for r in rows]


def job_ids_in_phase(
    conn: Connection, phase: str, created_before: datetime | None = None, limit: int = 1000
) -> list[str]:
    query = select(jobs.c.id).where(jobs.c.phase == phase)
    if created_before is not None:
        query = query.where(jobs.c.creation_time < created_before)
    rows = conn.execute(query.order_by(jobs.c.creation_time).limit(limit))
    return [r[0] for r in rows]


def executing_on(conn: Connection, host_prefix: str) -> list[tuple[str, str]]:
    """(job id, worker) of the EXECUTING jobs whose worker name starts with host_prefix."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.worker).where(
            jobs.c.phase == Phase.EXECUTING,
            or_(jobs.c.worker.is_(None), jobs.c.worker.startswith(host_prefix)),
        )
    )
    return [(r[0], r[1] or "") for r in rows]


def stale_executing(conn: Connection, before: datetime) -> list[tuple[str, str]]:
    """(job id, worker) of EXECUTING jobs whose runner has not beaten since `before`."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.worker).where(
            jobs.c.phase == Phase.EXECUTING,
            or_(jobs.c.heartbeat.is_(None), jobs.c.heartbeat < before),
            or_(jobs.c.worker.is_(None), jobs.c.worker != WAITING_FOR_CHILDREN),
        )
    )
    return [(r[0], r[1] or "") for r in rows]


def undispatched(conn: Connection, limit: int = 1000) -> list[str]:
    """QUEUED jobs whose dispatch failed (the broker was unreachable)."""
    rows = conn.execute(
        select(jobs.c.id)
        .where(jobs.c.phase == Phase.QUEUED, jobs.c.dispatch_failed)
        .order_by(jobs.c.creation_time)
        .limit(limit)
    )
    return [r[0] for r in rows]


def expired_job_ids(conn: Connection, now: datetime, limit: int = 500) -> list[str]:
    rows = conn.execute(select(jobs.c.id).where(jobs.c.destruction <= now).limit(limit))
    return [r[0] for r in rows]


def delete_job(conn: Connection, job_id: str) -> list[str]:
    """Delete the job's rows and the entities only it holds; the entity paths to remove."""
    owned = conn.execute(
        select(entities.c.id, entities.c.path).where(entities.c.job_id == job_id)
    ).all()
    conn.execute(delete(job_parameters).where(job_parameters.c.job_id == job_id))
    conn.execute(delete(job_inputs).where(job_inputs.c.job_id == job_id))
    conn.execute(delete(job_shares).where(job_shares.c.job_id == job_id))
    if owned:
        conn.execute(delete(entities).where(entities.c.id.in_([r[0] for r in owned])))
    conn.execute(delete(jobs).where(jobs.c.id == job_id))
    return [r[1] for r in owned]


# -- jobs made by jobs (chunks, pipeline steps) and reuse ------------------------------------

# The worker of a parent job whose children run: it holds no runner (the sweep of silent
# runners leaves it alone); the runner ending a child moves it on.
WAITING_FOR_CHILDREN = "children"


def wait_for_children(conn: Connection, job_id: str) -> None:
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.phase == Phase.EXECUTING)
        .values(worker=WAITING_FOR_CHILDREN, heartbeat=None)
    )


def take_waiting(conn: Connection, job_id: str, worker: str) -> JobRecord | None:
    """A runner takes a parent waiting for its children, to move it on (one runner does,
    however many children end at once); None if it is not waiting (any more)."""
    row = conn.execute(
        update(jobs)
        .where(
            jobs.c.id == job_id,
            jobs.c.phase == Phase.EXECUTING,
            jobs.c.worker == WAITING_FOR_CHILDREN,
        )
        .values(worker=worker, heartbeat=utcnow())
        .returning(*jobs.c)
    ).first()
    return _job(row) if row else None


def children(conn: Connection, parent_id: str) -> list[JobRecord]:
    rows = conn.execute(
        select(jobs).where(jobs.c.parent_id == parent_id).order_by(jobs.c.creation_time, jobs.c.id)
    )
    return [_job(r) for r in rows]


def set_reuse_key(conn: Connection, job_id: str, key: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(reuse_key=key))


def reusable(conn: Connection, key: str, owner: str | None, job_id: str) -> JobRecord | None:
    """The newest COMPLETED job of the owner that computed `key` (not this one)."""
    row = conn.execute(
        select(jobs)
        .where(
            jobs.c.reuse_key == key,
            jobs.c.phase == Phase.COMPLETED,
            jobs.c.owner.is_(None) if owner is None else jobs.c.owner == owner,
            jobs.c.id != job_id,
        )
        .order_by(jobs.c.end_time.desc())
        .limit(1)
    ).first()
    return _job(row) if row else None


def stalled_parents(conn: Connection) -> list[str]:
    """Parents still waiting although none of their children is active (the runner that
    ended the last one died before it moved the parent on)."""
    child = jobs.alias("child")
    rows = conn.execute(
        select(jobs.c.id).where(
            jobs.c.phase == Phase.EXECUTING,
            jobs.c.worker == WAITING_FOR_CHILDREN,
            ~exists().where(child.c.parent_id == jobs.c.id, child.c.phase.not_in(list(FINAL))),
        )
    )
    return [r[0] for r in rows]

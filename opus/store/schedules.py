"""Schedules: a job definition and its request, run at each tick of an interval or a
cron expression. A tick is taken by a conditional update of `next_run`, so that two
sweeps that overlap (a lease handed over) still make one job per tick."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select, update

from opus.store import schema

schedules: Table = schema.schedules  # type: ignore[assignment]


@dataclass(frozen=True)
class ScheduleRecord:
    id: str
    owner: str | None
    jobdef: str
    fields: list[tuple[str, str]]  # the values, as a form or `opus submit` sends them
    base_url: str  # the server's URL the schedule was made at (references resolve there)
    every: float | None
    cron: str | None
    next_run: datetime
    last_job_id: str | None
    created: datetime


def _record(row: Any) -> ScheduleRecord:
    request = json.loads(row.request)
    return ScheduleRecord(
        id=row.id,
        owner=row.owner,
        jobdef=row.jobdef,
        fields=[(str(name), str(value)) for name, value in request["fields"]],
        base_url=str(request.get("base_url", "")),
        every=row.every,
        cron=row.cron,
        next_run=row.next_run,
        last_job_id=row.last_job_id,
        created=row.created,
    )


def insert_schedule(conn: Connection, record: ScheduleRecord) -> None:
    request = json.dumps({"fields": record.fields, "base_url": record.base_url})
    conn.execute(
        insert(schedules).values(
            id=record.id,
            owner=record.owner,
            jobdef=record.jobdef,
            request=request,
            every=record.every,
            cron=record.cron,
            next_run=record.next_run,
            last_job_id=record.last_job_id,
            created=record.created,
        )
    )


def get_schedule(conn: Connection, schedule_id: str) -> ScheduleRecord | None:
    row = conn.execute(select(schedules).where(schedules.c.id == schedule_id)).first()
    return None if row is None else _record(row)


def list_schedules(conn: Connection, owner: str | None = None) -> list[ScheduleRecord]:
    """Every schedule, or one owner's, oldest first."""
    query = select(schedules).order_by(schedules.c.created, schedules.c.id)
    if owner is not None:
        query = query.where(schedules.c.owner == owner)
    return [_record(row) for row in conn.execute(query)]


def delete_schedule(conn: Connection, schedule_id: str) -> bool:
    return bool(conn.execute(delete(schedules).where(schedules.c.id == schedule_id)).rowcount)


def due(conn: Connection, now: datetime, limit: int = 100) -> list[ScheduleRecord]:
    query = (
        select(schedules).where(schedules.c.next_run <= now).order_by(schedules.c.next_run)
    ).limit(limit)
    return [_record(row) for row in conn.execute(query)]


def take_tick(conn: Connection, schedule: ScheduleRecord, next_run: datetime) -> bool:
    """Move the schedule on to `next_run`, if no one else took this tick first."""
    taken = conn.execute(
        update(schedules)
        .where(schedules.c.id == schedule.id, schedules.c.next_run == schedule.next_run)
        .values(next_run=next_run)
    )
    return bool(taken.rowcount)


def set_last_job(conn: Connection, schedule_id: str, job_id: str) -> None:
    conn.execute(update(schedules).where(schedules.c.id == schedule_id).values(last_job_id=job_id))

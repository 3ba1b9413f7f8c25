"""Periodic jobs: a definition and its values run at each tick of an interval
(`every`, such as 2s, 5m, 1h, 1d) or a cron expression (UTC), on behalf of the
schedule's owner.

Each tick makes a normal UWS job through `JobService.create` (limits, rights, inputs
by reference or URL all as for a request), informed by the schedule's previous run.
Ticks missed while no process ran the sweeps make one job, not one each: the next
tick is the first one after now.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from croniter import croniter

from opus.auth import Caller, Identities
from opus.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    OpusError,
    ParameterError,
    Unauthorized,
)
from opus.ids import new_id
from opus.jobdefs.params import check_text, check_value
from opus.store import jobs as job_store
from opus.store import schedules as store
from opus.store.schedules import ScheduleRecord
from opus.timeutil import utcnow
from opus.uws.service import JobService

log = logging.getLogger(__name__)

SHORTEST = 1.0  # seconds: the sweeps look for due schedules about this often
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
INTERVAL = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.ASCII)
# what a schedule's request may set beside the values (a schedule's jobs always run;
# their destruction follows from the owner's limits, a date would soon be past)
CONTROL = {"RUNID", "EXECUTIONDURATION", "SHARE"}


def interval(text: str) -> float:
    """Seconds of an interval such as 90, 2s, 5m, 1h or 1d."""
    match = INTERVAL.fullmatch(text.strip().lower())
    if match is None:
        raise ParameterError("every", f"{text!r} is not an interval such as 30s, 5m, 1h or 1d")
    seconds = float(match[1]) * UNITS[match[2] or "s"]
    if seconds < SHORTEST:
        raise ParameterError("every", f"at least {SHORTEST:g} s between ticks")
    return seconds


def next_tick(every: float | None, cron: str | None, after: datetime) -> datetime:
    """The first tick strictly after `after` (naive UTC)."""
    if cron is not None:
        found: datetime = croniter(cron, after).get_next(datetime)
        return found
    assert every is not None
    return after + timedelta(seconds=every)


class ScheduleService:
    def __init__(self, jobs: JobService, identities: Identities) -> None:
        self.jobs = jobs
        self.db = jobs.db
        self.identities = identities

    def add(
        self,
        caller: Caller,
        owner: str | None,
        jobdef_name: str,
        fields: list[tuple[str, str]],
        base_url: str,
        every: str | None = None,
        cron: str | None = None,
    ) -> ScheduleRecord:
        """A new schedule; its first tick is one interval (or the next cron time) from now.
        Only admins make schedules (for any owner, themselves by default)."""
        self._admin(caller)
        if (every is None) == (cron is None):
            raise BadRequest("give either an interval (every) or a cron expression (cron)")
        seconds = None if every is None else interval(every)
        if cron is not None and not croniter.is_valid(cron):
            raise ParameterError("cron", f"{cron!r} is not a cron expression such as '0 * * * *'")
        owner = caller.name if owner is None else owner
        runner = self._caller(owner)
        self._check(runner, jobdef_name, fields)
        now = utcnow()
        record = ScheduleRecord(
            id=new_id(),
            owner=owner,
            jobdef=jobdef_name,
            fields=list(fields),
            base_url=base_url,
            every=seconds,
            cron=cron,
            next_run=next_tick(seconds, cron, now),
            last_job_id=None,
            created=now,
        )
        with self.db.write() as conn:
            store.insert_schedule(conn, record)
        return record

    def all(self, caller: Caller) -> list[ScheduleRecord]:
        self._admin(caller)
        with self.db.read() as conn:
            return store.list_schedules(conn)

    def get(self, caller: Caller, schedule_id: str) -> ScheduleRecord:
        self._admin(caller)
        with self.db.read() as conn:
            found = store.get_schedule(conn, schedule_id)
        if found is None:
            raise NotFound(f"no schedule {schedule_id}")
        return found

    def remove(self, caller: Caller, schedule_id: str) -> None:
        self._admin(caller)
        with self.db.write() as conn:
            if not store.delete_schedule(conn, schedule_id):
                raise NotFound(f"no schedule {schedule_id}")

    def run_due(self) -> list[str]:
        """Make a job for each schedule due now (the sweeps' task); their ids."""
        now = utcnow()
        with self.db.read() as conn:
            due = store.due(conn, now)
        made = []
        for schedule in due:
            with self.db.write() as conn:
                if not store.take_tick(
                    conn, schedule, next_tick(schedule.every, schedule.cron, now)
                ):
                    continue  # another sweep took this tick
            job_id = self._run(schedule)
            if job_id is not None:
                made.append(job_id)
        return made

    def _run(self, schedule: ScheduleRecord) -> str | None:
        origin = job_store.JobOrigin(schedule_id=schedule.id, informed_by=schedule.last_job_id)
        fields = [*schedule.fields, ("PHASE", "RUN")]
        try:
            caller = self._caller(schedule.owner)
            job_id = self.jobs.create(
                caller, schedule.jobdef, fields, [], schedule.base_url, origin=origin
            )
        except OpusError as exc:  # the definition withdrawn, the owner at their limit...
            log.warning("schedule %s made no job at this tick: %s", schedule.id, exc.message)
            return None
        with self.db.write() as conn:
            store.set_last_job(conn, schedule.id, job_id)
        return job_id

    def _caller(self, owner: str | None) -> Caller:
        if owner is None:
            if not self.jobs.settings.anonymous:
                raise BadRequest("a schedule needs an owner where anonymous access is off")
            return self.identities.anonymous
        try:
            return self.identities.load(owner)
        except Unauthorized:
            raise ParameterError("owner", f"no user {owner!r}") from None

    def _check(self, caller: Caller, jobdef_name: str, fields: list[tuple[str, str]]) -> None:
        """The values as a job's creation would check them, without making one (URL inputs
        are fetched at each tick, not now)."""
        jobdef = self.jobs.jobdef(caller, jobdef_name)
        given = set()
        for name, value in fields:
            check_text(name, value)
            if name.upper() in CONTROL:
                continue
            pdef = jobdef.parameter(name)
            if pdef is not None:
                check_value(pdef, value)
                given.add(pdef.name)
            elif jobdef.used_entity(name) is not None:
                given.add(name)
            else:
                raise ParameterError(name, f"{jobdef.name} has no parameter or input of this name")
        for pdef in jobdef.parameters:
            if pdef.required and pdef.default is None and pdef.name not in given:
                raise ParameterError(pdef.name, "required, and no value was given")
        for used in jobdef.used:
            if used.required and not used.default and used.name not in given:
                raise ParameterError(used.name, "required input: give a stored entity id or URL")

    @staticmethod
    def _admin(caller: Caller) -> None:
        if not caller.admin:
            raise Forbidden("only administrators manage schedules")

"""UWS 1.1 rules: creating jobs, phases, parameters, limits, WAIT, destruction.

Knows nothing of HTTP: routes hand it plain values and turn its errors
(opus.errors) into statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from opus import metrics
from opus.auth import (
    Caller,
    check_may_run,
    limits_of,
    may_change,
    may_run,
    may_see,
    visible_entities,
    visible_jobs,
)
from opus.config import Settings
from opus.errors import Forbidden, NotFound, ParameterError, TooManyJobs, Unavailable
from opus.execution.destruction import destroy_job
from opus.execution.dispatch import Dispatcher
from opus.execution.notify import Notifier, WaitHub
from opus.ids import is_id, new_id
from opus.jobdefs.model import JobDefinition
from opus.jobdefs.params import whole_number
from opus.jobdefs.registry import Registry
from opus.phases import BLOCKING, PHASES, RUNNABLE, UNDER_WAY, Phase
from opus.store import jobs as store
from opus.store import users as accounts
from opus.store.db import Database
from opus.store.objects import Storage, StoreUnavailable, storage_of
from opus.timeutil import parse_datetime, utcnow
from opus.uws import limits as uws_limits
from opus.uws.binding import Binder, Upload

MAX_LAST = 100_000
MAX_RUN_ID = 256
MAX_LIST = 10_000  # longer lists are asked to use LAST (UWS 1.1 allows a 303 for that)


class ListTooLong(Exception):
    """The job list asked for is longer than MAX_LIST: ask again with LAST."""


@dataclass(frozen=True)
class JobView:
    job: store.JobRecord
    parameters: list[store.ParameterValue]
    results: list[store.EntityRecord]


class JobService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: Registry,
        dispatcher: Dispatcher,
        notifier: Notifier,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.dispatcher = dispatcher
        self.notifier = notifier
        self.waits = WaitHub(notifier)
        self.read_phase = store.phase_reader(db)
        self.storage: Storage = storage_of(settings)
        self.binder = Binder(settings, db, self.result)

    # -- lookups ---------------------------------------------------------------------------

    def jobdef(self, caller: Caller, name: str) -> JobDefinition:
        """The definition; Forbidden for one restricted to groups the caller is not in."""
        jobdef = self.registry.get(name)
        if jobdef is None:
            raise NotFound(f"no job definition named {name!r}")
        check_may_run(caller, jobdef)
        return jobdef

    def jobdefs(self, caller: Caller) -> list[JobDefinition]:
        """The definitions the caller may run, by name."""
        found = [self.registry.definitions[n] for n in self.registry.names()]
        return [d for d in found if may_run(caller, d)]

    def _visible(self, caller: Caller, job_id: str, owner: str | None) -> bool:
        """`may_see`, reading the job's shares only when they can decide it."""
        if caller.admin or owner is None or owner == caller.name or not caller.groups:
            return may_see(caller, owner)
        with self.db.read() as conn:
            return may_see(caller, owner, accounts.get_shares(conn, job_id))

    def job(self, caller: Caller, jobdef: str, job_id: str) -> store.JobRecord:
        """The job, if the caller may see it: a hidden job is not found, as a missing one."""
        self.jobdef(caller, jobdef)
        with self.db.read() as conn:
            job = store.get_job(conn, job_id) if is_id(job_id) else None
        if job is None or job.jobdef != jobdef or not self._visible(caller, job_id, job.owner):
            raise NotFound(f"no job {job_id!r} in {jobdef}")
        return job

    def job_by_id(self, caller: Caller, job_id: str) -> store.JobRecord:
        """The job of this id, whatever its definition, if the caller may see it."""
        with self.db.read() as conn:
            job = store.get_job(conn, job_id) if is_id(job_id) else None
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return self.job(caller, job.jobdef, job_id)

    def _own(self, caller: Caller, jobdef: str, job_id: str) -> store.JobRecord:
        """The job, if the caller may change it (its owner, or an admin)."""
        job = self.job(caller, jobdef, job_id)
        if not may_change(caller, job.owner):
            raise Forbidden(
                f"job {job_id} is {job.owner}'s: only its owner or an admin may change it"
            )
        return job

    def get(self, caller: Caller, jobdef: str, job_id: str) -> JobView:
        """The job with its parameters and results."""
        job = self.job(caller, jobdef, job_id)
        with self.db.read() as conn:
            return JobView(job, store.get_parameters(conn, job_id), store.get_results(conn, job_id))

    def phase(self, caller: Caller, jobdef: str, job_id: str) -> str:
        self.jobdef(caller, jobdef)
        found = self.read_phase(job_id) if is_id(job_id) else None
        if found is None or found[0] != jobdef or not self._visible(caller, job_id, found[2]):
            raise NotFound(f"no job {job_id!r} in {jobdef}")
        return found[1]

    def parameter(
        self, caller: Caller, jobdef: str, job_id: str, name: str
    ) -> list[store.ParameterValue]:
        values = [p for p in self.get(caller, jobdef, job_id).parameters if p.name == name]
        if not values:
            raise NotFound(f"job {job_id} has no parameter {name!r}")
        return values

    def result(
        self, caller: Caller, jobdef: str, job_id: str, result_id: str
    ) -> store.EntityRecord:
        self.job(caller, jobdef, job_id)
        with self.db.read() as conn:
            results = store.get_results(conn, job_id)
        for entity in results:
            if entity.name == result_id:
                return entity
        raise NotFound(f"job {job_id} has no result {result_id!r}")

    def entity(self, caller: Caller, entity_id: str) -> store.EntityRecord:
        """A stored entity the caller may see (one held or used by a job it may see)."""
        with self.db.read() as conn:
            entity = (
                store.get_entity(conn, entity_id, visible_entities(caller))
                if is_id(entity_id)
                else None
            )
        if entity is None:
            raise NotFound(f"no stored entity {entity_id!r}")
        return entity

    def recent_results(self, caller: Caller, limit: int) -> list[tuple[store.EntityRecord, str]]:
        """The newest results of the caller's own jobs, with their jobs' definitions (none
        for a visitor: its jobs are nobody's)."""
        if caller.name is None:
            return []
        with self.db.read() as conn:
            return store.recent_results(conn, caller.name, limit)

    # -- job list --------------------------------------------------------------------------

    def list_jobs(
        self,
        caller: Caller,
        jobdef: str,
        phases: Sequence[str],
        after: str | None,
        last: str | None,
    ) -> list[store.JobRecord]:
        """The jobs of a definition the caller may see, filtered as UWS 1.1 says."""
        self.jobdef(caller, jobdef)
        wanted = []
        for phase in phases:
            if phase.upper() not in PHASES:
                raise ParameterError("PHASE", f"{phase!r} is not a UWS phase ({', '.join(PHASES)})")
            wanted.append(phase.upper())
        after_time = None
        if after is not None:
            try:
                after_time = parse_datetime(after)
            except ValueError as exc:
                raise ParameterError("AFTER", str(exc)) from None
        last_n = None
        if last is not None:
            last_n = whole_number(last, MAX_LAST)
            if last_n is None:
                raise ParameterError("LAST", f"{last!r} is not a whole number from 0 to {MAX_LAST}")
        visible = visible_jobs(caller)
        with self.db.read() as conn:
            if (
                last_n is None
                and store.count_jobs(conn, jobdef, wanted, after_time, visible) > MAX_LIST
            ):
                raise ListTooLong()
            return store.list_jobs(conn, jobdef, wanted, after_time, last_n, visible)

    def page(
        self,
        caller: Caller,
        jobdef: str | None,
        phase: str | None,
        size: int,
        start: str | None = None,
        oldest_first: bool = False,
    ) -> list[store.JobRecord]:
        """A page of the jobs the caller may see, newest (or oldest) first, across
        definitions (or of one), after the job `start` (the last of the page before)."""
        names = [d.name for d in self.jobdefs(caller)]
        if jobdef:
            names = [self.jobdef(caller, jobdef).name]
        if phase and phase.upper() not in PHASES:
            raise ParameterError("phase", f"{phase!r} is not a UWS phase")
        with self.db.read() as conn:
            after = store.get_job(conn, start) if start and is_id(start) else None
            return store.page_of_jobs(
                conn,
                names,
                phase.upper() if phase else None,
                visible_jobs(caller),
                size,
                (after.creation_time, after.id) if after else None,
                oldest_first,
            )

    # -- creation and parameters -----------------------------------------------------------

    def create(
        self,
        caller: Caller,
        jobdef_name: str,
        fields: Sequence[tuple[str, str]],
        uploads: Sequence[Upload],
        base_url: str,
        origin: store.JobOrigin | None = None,
    ) -> str:
        """Create a job from request fields; PHASE=RUN queues it at once. Returns its id.
        `origin` says what made it beside the request (a schedule, a re-run)."""
        jobdef = self.jobdef(caller, jobdef_name)
        fields, shared = self._shares(caller, fields)
        if shared is None:
            shared = jobdef.share if caller.name else []
        limits = limits_of(self.settings, caller)
        job_id = new_id()
        changes = self.binder.bind(caller, jobdef, job_id, fields, uploads, base_url, creating=True)
        try:
            now = utcnow()
            control = changes.control
            run = self._run_requested(control)
            if len(control.get("RUNID", "")) > MAX_RUN_ID:
                raise ParameterError("RUNID", f"longer than {MAX_RUN_ID} characters")
            job = store.new_job(
                id=job_id,
                jobdef=jobdef.name,
                run_id=control.get("RUNID"),
                owner=caller.name,
                phase=Phase.QUEUED if run else Phase.PENDING,
                creation_time=now,
                execution_duration=uws_limits.execution_duration(
                    limits, jobdef, control.get("EXECUTIONDURATION")
                ),
                destruction=uws_limits.destruction(
                    self.settings, limits, control.get("DESTRUCTION"), now
                ),
                quote=uws_limits.quote(jobdef, now),
                origin=origin,
            )
            self.binder.apply_defaults(jobdef, changes, base_url)
            if run:
                self._check_complete(jobdef, changes.given())
            with self.db.write() as conn:
                if run:
                    self._check_active(conn, caller)
                store.insert_entities(conn, changes.entities)
                store.insert_job(conn, job, changes.parameters, changes.inputs)
                accounts.add_shares(conn, job_id, shared)
        except BaseException:
            self.binder.discard(changes)
            raise
        if run:
            self.dispatcher.submit(job_id)
        return job_id

    def set_parameters(
        self,
        caller: Caller,
        jobdef_name: str,
        job_id: str,
        fields: Sequence[tuple[str, str]],
        uploads: Sequence[Upload],
        base_url: str,
    ) -> None:
        """Change parameters, inputs or SHARE of a PENDING job."""
        jobdef = self.jobdef(caller, jobdef_name)
        job = self._own(caller, jobdef_name, job_id)
        if job.phase != Phase.PENDING:
            raise Forbidden(f"job {job_id} is {job.phase}: parameters change only while PENDING")
        fields, shared = self._shares(caller, fields)
        run_ids = [v for k, v in fields if k.upper() == "RUNID"]  # UWS: a label, set any time
        fields = [(k, v) for k, v in fields if k.upper() != "RUNID"]
        if len(run_ids) > 1 or any(len(r) > MAX_RUN_ID for r in run_ids):
            raise ParameterError("RUNID", f"given once, at most {MAX_RUN_ID} characters")
        changes = self.binder.bind(
            caller, jobdef, job_id, fields, uploads, base_url, creating=False
        )
        try:
            with self.db.write() as conn:
                if store.get_phase(conn, job_id) != (jobdef.name, Phase.PENDING):
                    raise Forbidden(f"job {job_id} is no longer PENDING")
                if shared is not None:
                    accounts.set_shares(conn, job_id, shared)
                if run_ids:
                    store.set_run_id(conn, job_id, run_ids[0])
                store.insert_entities(conn, changes.entities)
                store.replace_parameters(conn, job_id, changes.parameters)
                roles = [
                    str(p["name"]) for p in changes.parameters if jobdef.used_entity(str(p["name"]))
                ]
                store.replace_inputs(conn, job_id, roles, changes.inputs)
        except BaseException:
            self.binder.discard(changes)
            raise

    def _shares(
        self, caller: Caller, fields: Sequence[tuple[str, str]]
    ) -> tuple[list[tuple[str, str]], list[str] | None]:
        """The fields without SHARE, and the groups SHARE names (None: not given).

        SHARE is repeatable and takes comma-separated names; a user shares with groups it
        is a member of (an admin with any group); an empty value shares with none."""
        rest = [(k, v) for k, v in fields if k.upper() != "SHARE"]
        values = [v for k, v in fields if k.upper() == "SHARE"]
        if not values:
            return rest, None
        if caller.name is None:
            raise ParameterError(
                "SHARE", "anonymous jobs are everyone's: send credentials to share"
            )
        names = sorted({n.strip() for v in values for n in v.split(",") if n.strip()})
        with self.db.read() as conn:
            for name in names:
                if accounts.get_group(conn, name) is None:
                    raise ParameterError("SHARE", f"no group {name!r}")
                if not caller.admin and name not in caller.groups:
                    raise ParameterError("SHARE", f"you are not a member of {name!r}")
        return rest, names

    def _check_active(self, conn: Connection, caller: Caller) -> None:
        """Past the caller's limit of jobs QUEUED or EXECUTING, no more are run (429)."""
        limit = limits_of(self.settings, caller).max_active_jobs
        if not limit:
            return
        active = accounts.count_active(conn, caller.name)
        if active >= limit:
            raise TooManyJobs(
                f"{caller.label} has {active} jobs queued or executing, the most allowed: "
                "run this one when some have ended"
            )

    @staticmethod
    def _check_complete(jobdef: JobDefinition, given: set[str]) -> None:
        """Every required parameter and input has a value (checked when the job is run)."""
        for pdef in jobdef.parameters:
            if pdef.required and pdef.name not in given:
                raise ParameterError(pdef.name, "required, and no value was given")
        for used in jobdef.used:
            if used.required and used.name not in given:
                raise ParameterError(
                    used.name, "required input: upload a file, or give a stored entity id or URL"
                )

    # -- phases ----------------------------------------------------------------------------

    @staticmethod
    def _run_requested(control: dict[str, str]) -> bool:
        phase = control.get("PHASE")
        if phase is None:
            return False
        if phase.strip().upper() != "RUN":
            raise ParameterError("PHASE", f"{phase!r}: a new job takes only PHASE=RUN")
        return True

    def change_phase(self, caller: Caller, jobdef_name: str, job_id: str, value: str) -> None:
        action = value.strip().upper()
        job = self._own(caller, jobdef_name, job_id)
        if action == "RUN":
            self._run(caller, jobdef_name, job)
        elif action == "ABORT":
            self._abort(job)
        elif action in ("SUSPEND", "ARCHIVE"):
            raise ParameterError(
                "PHASE", f"{action} is not supported by this server; use RUN or ABORT"
            )
        else:
            raise ParameterError("PHASE", f"{value!r} is not RUN or ABORT")

    def _run(self, caller: Caller, jobdef_name: str, job: store.JobRecord) -> None:
        if job.phase in UNDER_WAY:
            return  # already on its way: RUN again changes nothing
        if job.phase not in RUNNABLE:
            raise Forbidden(f"job {job.id} is {job.phase}: only a PENDING job can be run")
        jobdef = self.jobdef(caller, jobdef_name)
        with self.db.write() as conn:
            given = {p.name for p in store.get_parameters(conn, job.id)}
            self._check_complete(jobdef, given)
            self._check_active(conn, caller)
            moved = store.queue(conn, job.id, uws_limits.quote(jobdef, utcnow()))
        if not moved:
            raise Forbidden(f"job {job.id} is no longer PENDING")
        self.notifier.publish(job.id)
        self.dispatcher.submit(job.id)

    def _abort(self, job: store.JobRecord) -> None:
        if job.phase == Phase.ABORTED:
            return
        aborted = [job]
        with self.db.write() as conn:
            moved = store.abort(conn, job.id, utcnow(), "aborted at the owner's request")
            current = store.get_phase(conn, job.id)
            # its chunks and pipeline steps (and theirs) go with it
            parents = [job.id] if moved else []
            while parents:
                kids = store.children(conn, parents.pop())
                for kid in kids:
                    if store.abort(conn, kid.id, utcnow(), f"its parent job {job.id} was aborted"):
                        aborted.append(kid)
                parents += [kid.id for kid in kids]
        if not moved:
            phase = current[1] if current else "gone"
            raise Forbidden(f"job {job.id} is {phase}: it can no longer be aborted")
        now = utcnow()
        for each in aborted:
            self.notifier.publish(each.id)
            if each.phase != Phase.EXECUTING:  # a runner counts those it sees aborted
                metrics.job_ended(each, Phase.ABORTED, now)

    # -- limits ----------------------------------------------------------------------------

    def set_execution_duration(
        self, caller: Caller, jobdef_name: str, job_id: str, raw: str | None
    ) -> None:
        if raw is None:
            raise ParameterError("EXECUTIONDURATION", "missing")
        job = self._own(caller, jobdef_name, job_id)
        if job.phase != Phase.PENDING:
            raise Forbidden(f"job {job_id} is {job.phase}: its execution duration is fixed")
        value = uws_limits.execution_duration(
            limits_of(self.settings, caller), self.jobdef(caller, jobdef_name), raw
        )
        with self.db.write() as conn:
            if not store.set_execution_duration(conn, job_id, value):
                raise Forbidden(f"job {job_id} is no longer PENDING")

    def set_destruction(
        self, caller: Caller, jobdef_name: str, job_id: str, raw: str | None
    ) -> None:
        if raw is None:
            raise ParameterError("DESTRUCTION", "missing")
        self._own(caller, jobdef_name, job_id)
        value = uws_limits.destruction(
            self.settings, limits_of(self.settings, caller), raw, utcnow()
        )
        with self.db.write() as conn:
            store.set_destruction(conn, job_id, value)

    # -- WAIT ------------------------------------------------------------------------------

    def wait(
        self, caller: Caller, jobdef_name: str, job_id: str, wait: str, phase: str | None
    ) -> None:
        """UWS 1.1 blocking: return when the phase changes or the time is up (section 2.2.1.2)."""
        try:
            seconds = int(wait.strip())
        except ValueError:
            raise ParameterError("WAIT", f"{wait!r} is not a whole number of seconds") from None
        if seconds < 0:
            seconds = self.settings.max_wait
        seconds = min(seconds, self.settings.max_wait)
        wanted = None
        if phase is not None:
            wanted = phase.strip().upper()
            if wanted not in PHASES:
                raise ParameterError("PHASE", f"{phase!r} is not a UWS phase")
        current = self.phase(caller, jobdef_name, job_id)
        if seconds == 0 or current not in BLOCKING:
            return
        if wanted is not None and wanted != current:
            return

        def unchanged() -> bool:
            found = self.read_phase(job_id)
            return found is not None and found[1] == current

        self.waits.wait(job_id, float(seconds), unchanged)

    # -- deletion --------------------------------------------------------------------------

    def delete(self, caller: Caller, jobdef_name: str, job_id: str) -> None:
        self._own(caller, jobdef_name, job_id)
        try:
            destroy_job(self.settings, self.db, self.notifier, job_id)
        except StoreUnavailable as exc:
            raise Unavailable(f"the job is kept: the object store is unreachable ({exc})") from None

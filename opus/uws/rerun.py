"""Running again the jobs made from an entity found wrong.

The jobs are those downstream of the entity (the lineage walked FORTH in SQL,
`provenance.query.downstream`). Each is made again through `JobService.create`, as its
owner, with its definition, values, inputs, run id and shares, but with the entity
replaced by its replacement, and each result of a job already run again replaced by the
result of the same name of its new job. Without a replacement, the job that made the
entity runs again first, its new result taking the entity's place (a job whose result
was invalidated is never reused). A job is created once the jobs whose results it uses
have completed; jobs that do not depend on each other run side by side. Each new job
replaces the old one (`JobOrigin.replaces`, recorded in its provenance); a deterministic
definition reuses an earlier job's results where the new inputs have the old ones'
bytes. Chunks and pipeline steps are made again by their parent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from opus.auth import Identities
from opus.errors import NotFound, OpusError, ParameterError
from opus.ids import (
    ENTITY_PREFIX,
    JOB_PREFIX,
    entity_qname,
    is_id,
    job_qname,
    public_base,
    qualified_name,
)
from opus.jobdefs.model import RERUN
from opus.phases import FINAL, Phase
from opus.store import jobs as store
from opus.store import users as accounts
from opus.uws.service import JobService
from provenance import query
from provenance import store as prov

SKIPPED = "SKIPPED"  # the phase of an outcome whose job was not created
POLL = (0.05, 1.0)  # seconds between phase checks while a job runs: first, at most


@dataclass
class Step:
    """A job to run again, its inputs, and the jobs of the plan whose results it uses."""

    job: store.JobRecord
    inputs: list[tuple[str, store.EntityRecord]]
    after: set[str] = field(default_factory=set)
    regenerates: bool = False  # it made the entity: run again to make it anew


@dataclass
class Plan:
    entity: str  # the qualified name of the entity found wrong
    entity_id: str | None  # its stored file's id (None: not a stored file, e.g. a reference)
    replacement: str | None  # the stored entity taking its place
    invalidated: bool
    steps: list[Step]  # in dependency order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (activity, why)
    note: str = ""

    def replaced(self, step: Step) -> list[tuple[str, str, str]]:
        """(role, old entity id, what takes its place) for each input of `step` that changes."""
        runs = {s.job.id for s in self.steps}
        found = []
        for role, entity in step.inputs:
            if entity.id == self.entity_id and self.replacement:
                found.append((role, entity.id, self.replacement))
            elif entity.origin == "result" and entity.job_id in runs:
                found.append((role, entity.id, f"{entity.name} of the new {entity.job_id}"))
        return found


@dataclass(frozen=True)
class Outcome:
    old: str  # the job run again
    new: str | None  # its new job (None: not created)
    phase: str  # the new job's final phase, or SKIPPED
    note: str = ""  # why it was skipped; whose results it reused


class RerunService:
    def __init__(self, jobs: JobService, identities: Identities) -> None:
        self.jobs = jobs
        self.db = jobs.db
        self.identities = identities

    def plan(self, given: str, replacement: str | None = None) -> Plan:
        """What would run again for the entity `given` (a qualified name, its URI or a
        bare id), with the stored entity `replacement` in its place (None: the job that
        made it runs again too). Nothing is created."""
        public = self.jobs.settings.public_url
        name = qualified_name(given.strip(), public_base(public) if public else "")
        name = entity_qname(name) if is_id(name) else name
        with self.db.read() as conn:
            if not conn.execute(
                select(prov.entities.c.id).where(prov.entities.c.id == name)
            ).first():
                raise NotFound(f"no provenance entity {given!r}")
            found = query.downstream(conn, [name])
            stored = _stored_id(name)
            entity_id = stored if stored and store.get_entity(conn, stored) else None
            replacing = self._replacement(conn, replacement, entity_id, name)
            invalidated = bool(query.invalidations(conn, [name]))
            plan = Plan(name, entity_id, replacing, invalidated, [])
            steps: dict[str, Step] = {}
            if replacing is None:
                maker = self._maker(conn, name, plan)
                if maker is not None:
                    steps[maker.job.id] = maker
            for activity in found.activities:
                job = self._job(conn, activity, plan)
                if job is not None and job.id not in steps:
                    steps[job.id] = Step(job, store.get_inputs(conn, job.id))
        for step in steps.values():
            step.after = {
                e.job_id
                for _, e in step.inputs
                if e.origin == "result" and e.job_id in steps and e.job_id != step.job.id
            }
        rank = {a: n for n, a in enumerate(found.activities)}
        ordered = _ordered(steps, lambda s: -1 if s.regenerates else rank[job_qname(s.job.id)])
        plan.steps = ordered if entity_id is None else self._changing(ordered, plan)
        return plan

    @staticmethod
    def _changing(ordered: list[Step], plan: Plan) -> list[Step]:
        """The steps one of whose inputs changes: the stored entity itself, or a result of
        a step kept. A job downstream only through results it reused (of the same bytes
        as its own inputs would give) is left as it is."""
        kept: list[Step] = []
        for step in ordered:
            runs = {s.job.id for s in kept}
            if step.regenerates or any(
                e.id == plan.entity_id or (e.origin == "result" and e.job_id in runs)
                for _, e in step.inputs
            ):
                step.after &= runs
                kept.append(step)
            else:
                why = "none of its inputs changes (it reused results made from the entity)"
                plan.skipped.append((job_qname(step.job.id), why))
        return kept

    def _replacement(
        self, conn: Connection, given: str | None, entity_id: str | None, name: str
    ) -> str | None:
        if given is None:
            return None
        stored = _stored_id(given.strip())
        if not stored or store.get_entity(conn, stored) is None:
            raise NotFound(f"no stored entity {given!r} to take its place")
        if entity_id is None:
            raise ParameterError(
                "replacement", f"{name} is not a stored file: no job has it as an input"
            )
        if stored == entity_id:
            raise ParameterError("replacement", "is the entity found wrong itself")
        return stored

    def _maker(self, conn: Connection, name: str, plan: Plan) -> Step | None:
        """The job that made the entity, to run again first; None for an entity no job of
        this server made (a file a unit read: the jobs read it again as it is now)."""
        g = prov.generations.c
        maker = conn.execute(select(g.activity_id).where(g.entity_id == name)).scalar()
        job_id = maker.removeprefix(JOB_PREFIX) if maker else ""
        job = store.get_job(conn, job_id) if is_id(job_id) else None
        if job is not None and job.parent_id is None:
            return Step(job, store.get_inputs(conn, job.id), regenerates=True)
        if plan.entity_id is not None:
            made = "a chunk or step of a job" if job else "no job of this server (still)"
            raise ParameterError(
                "replacement", f"{name} was made by {made}: give the entity taking its place"
            )
        plan.note = f"{name} is not a stored file: the jobs read it again as it is now"
        return None

    @staticmethod
    def _job(conn: Connection, activity: str, plan: Plan) -> store.JobRecord | None:
        """The job of an activity, to run again; None (said why in the plan) if it cannot."""
        job_id = activity.removeprefix(JOB_PREFIX)
        job = store.get_job(conn, job_id) if activity.startswith(JOB_PREFIX) else None
        if job is None:
            plan.skipped.append((activity, "not a job of this server any more (destroyed)"))
        elif job.parent_id is not None:
            plan.skipped.append((activity, f"made again by its parent job {job.parent_id}"))
            return None
        return job

    def run(self, plan: Plan, base_url: str, tell: Callable[[str], None] = print) -> list[Outcome]:
        """Create the plan's jobs in order, each once those it depends on have ended; the
        outcome of each (`tell` hears of every job created and ended)."""
        replaced: dict[str, str] = {}  # old entity id -> the one taking its place
        if plan.entity_id and plan.replacement:
            replaced[plan.entity_id] = plan.replacement
        ended: dict[str, Outcome] = {}
        remaining = list(plan.steps)
        while remaining:
            ready = [s for s in remaining if s.after <= ended.keys()] or remaining[:1]
            started = []
            for step in ready:
                remaining.remove(step)
                outcome = self._start(step, ended, replaced, base_url)
                if outcome.new is None:
                    ended[step.job.id] = outcome
                    tell(f"{step.job.id}: not run again: {outcome.note}")
                else:
                    tell(f"{step.job.id}: run again as {outcome.new} ({step.job.jobdef})")
                    started.append(step)
                    ended[step.job.id] = outcome
            for step in started:
                outcome = self._finish(ended[step.job.id], replaced)
                ended[step.job.id] = outcome
                note = f" ({outcome.note})" if outcome.note else ""
                tell(f"{step.job.id}: {outcome.new} {outcome.phase}{note}")
        return [ended[s.job.id] for s in plan.steps]

    def _start(
        self, step: Step, ended: dict[str, Outcome], replaced: dict[str, str], base_url: str
    ) -> Outcome:
        old = step.job
        failed = [j for j in sorted(step.after & ended.keys()) if ended[j].phase != Phase.COMPLETED]
        if failed:
            return Outcome(old.id, None, SKIPPED, f"job {failed[0]} was not run again to the end")
        try:
            new = self._create(step, replaced, base_url)
        except OpusError as exc:
            return Outcome(old.id, None, SKIPPED, exc.message)
        return Outcome(old.id, new, Phase.QUEUED)

    def _create(self, step: Step, replaced: dict[str, str], base_url: str) -> str:
        old = step.job
        jobdef = self.jobs.registry.get(old.jobdef)
        if jobdef is None:
            raise NotFound(f"job definition {old.jobdef!r} is not served any more")
        owner = self.identities.load(old.owner) if old.owner else self.identities.anonymous
        with self.db.read() as conn:
            parameters = store.get_parameters(conn, old.id)
            shares = accounts.get_shares(conn, old.id)
        roles = {role for role, _ in step.inputs}
        fields = [("PHASE", "RUN")]
        if old.run_id:
            fields.append(("RUNID", old.run_id))
        if shares:
            fields.append(("SHARE", ",".join(sorted(shares))))
        for p in parameters:
            known = jobdef.parameter(p.name) or jobdef.used_entity(p.name)
            # a job's reuse is decided again: `rerun` is left out; an input given by URL
            # and never fetched (the job failed first) is given by its URL again
            if known and p.name != RERUN and (not p.by_reference or p.name not in roles):
                fields.append((p.name, p.value))
        fields += [(role, replaced.get(e.id, e.id)) for role, e in step.inputs]
        return self.jobs.create(
            owner, old.jobdef, fields, [], base_url, origin=store.JobOrigin(replaces=old.id)
        )

    def _finish(self, started: Outcome, replaced: dict[str, str]) -> Outcome:
        """Wait for a new job to end; the results of the old one map to its own."""
        assert started.new is not None
        phase, pause = self._phase(started.new), POLL[0]
        while phase not in FINAL:
            time.sleep(pause)
            pause = min(pause * 2, POLL[1])
            phase = self._phase(started.new)
        if phase != Phase.COMPLETED:
            return Outcome(started.old, started.new, phase)
        with self.db.read() as conn:
            old = {e.name: e.id for e in store.get_results(conn, started.old)}
            new = {e.name: e.id for e in store.get_results(conn, started.new)}
            reused = _reused_from(conn, started.new)
        replaced.update({old[name]: new[name] for name in old.keys() & new.keys()})
        return Outcome(started.old, started.new, phase, f"reused {reused}" if reused else "")

    def _phase(self, job_id: str) -> str:
        found = self.jobs.read_phase(job_id)
        return found[1] if found else "DESTROYED"


def _stored_id(given: str) -> str | None:
    """The stored file's id a name gives (`opus:ent_<id>`, or the bare id), else None."""
    local = given.removeprefix(ENTITY_PREFIX)
    return local if is_id(local) else None


def _reused_from(conn: Connection, job_id: str) -> str | None:
    """The job whose results a job reused, from its recorded context."""
    a, c = prov.activities.c, prov.contexts.c
    found = conn.execute(
        select(c.value)
        .join_from(prov.activities, prov.contexts, c.context_id == a.context_id)
        .where(a.id == job_qname(job_id), c.key == "reused_from")
    ).scalar()
    return str(found) if found else None


def _ordered(steps: dict[str, Step], rank: Callable[[Step], int]) -> list[Step]:
    """The steps, each after those whose results it uses (ties, and a cycle, by rank)."""
    waiting = dict(steps)
    order: list[Step] = []
    while waiting:
        done = {s.job.id for s in order}
        ready = [s for s in waiting.values() if s.after <= done] or list(waiting.values())
        chosen = min(ready, key=rank)
        order.append(chosen)
        del waiting[chosen.job.id]
    return order

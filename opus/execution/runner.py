"""The job runner: claims a QUEUED job, runs what its definition declares, ends it.

The same runner serves every executor (the embedded executor's runner processes
and Celery workers). A job's working directory is prepared by `workspace`, its
process supervised by `process`, its results collected by `results`; the runner
claims the job, watches for ABORT, and ends the job with its results and its
provenance in one transaction.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy.exc import OperationalError

from opus import metrics
from opus.config import Settings
from opus.execution import children, reuse, service_call, workspace
from opus.execution.dispatch import Dispatcher, make_dispatcher
from opus.execution.failures import JobFailure, Shutdown
from opus.execution.notify import Notifier
from opus.execution.process import run_process
from opus.execution.recording import Told, entity_of, job_activity, told_by
from opus.execution.results import collect_results, publish
from opus.execution.service_call import ServiceJob
from opus.ids import job_qname
from opus.jobdefs.model import JobDefinition
from opus.jobdefs.params import xml_safe
from opus.jobdefs.registry import Registry
from opus.phases import Phase
from opus.store import jobs as store
from opus.store import users as accounts
from opus.store.db import Database
from opus.store.objects import Storage, storage_of
from opus.timeutil import utcnow
from opus.units import manifest
from provenance.capture import record

__all__ = [
    "HEARTBEAT_INTERVAL",
    "JobFailure",
    "RunnerContext",
    "Shutdown",
    "lost_job",
    "resume_parents",
    "run_job",
]

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5.0  # seconds between "still running" marks (a lost worker stops them)
# While the database is away a runner tries to end its job every half second for a minute:
# often enough to be first when it comes back (before the sweep finds the job silent).
FINISH_RETRY_INTERVAL = 0.5
FINISH_RETRY_FOR = 60.0


@dataclass
class RunnerContext:
    settings: Settings
    db: Database
    registry: Registry
    notifier: Notifier
    # told the process group of each job's process (the embedded executor kills it if the
    # runner dies: a job's processes run in a session of their own and would outlive it)
    on_process_started: Callable[[int], None] | None = None
    dispatcher: Dispatcher | None = None  # for the jobs a job makes (made when first needed)

    def submit(self, job_ids: list[str]) -> None:
        if job_ids and self.dispatcher is None:
            self.dispatcher = make_dispatcher(self.settings, self.db)
        for job_id in job_ids:
            assert self.dispatcher is not None
            self.dispatcher.submit(job_id)

    @property
    def storage(self) -> Storage:
        """Where stored files live (one per process: made after a fork)."""
        return storage_of(self.settings)

    @property
    def worker_name(self) -> str:
        """host:pid of the process running jobs (read each time: contexts cross forks)."""
        return f"{socket.gethostname()}:{os.getpid()}"


def lost_job(ctx: RunnerContext, job_id: str, reason: str) -> Phase | None:
    """A job still EXECUTING whose runner is gone goes back to QUEUED if its definition
    allows a retry and it has not had one (the caller dispatches it), else ends in ERROR.
    The phase it went to; None if it was not EXECUTING any more."""
    with ctx.db.write() as conn:
        job = store.get_job(conn, job_id)
        if job is None or job.phase != Phase.EXECUTING:
            return None
        jobdef = ctx.registry.get(job.jobdef)
        retry = jobdef is not None and jobdef.retry_on_worker_loss
        if retry and job.attempts < 2:
            phase, moved = Phase.QUEUED, store.requeue_lost(conn, job_id)
        else:
            message = reason + ("; it had been retried once" if retry else "")
            phase, moved = Phase.ERROR, store.fail_lost(conn, job_id, utcnow(), message)
        if not moved:
            return None
    if phase == Phase.ERROR:
        metrics.job_ended(job, phase, utcnow())
    log.warning("job %s: %s: now %s", job_id, reason, phase)
    ctx.notifier.publish(job_id)
    return phase


@dataclass
class _Run:
    """What is known of a job while it runs: enough to record its provenance at any point."""

    job: store.JobRecord
    parameters: list[store.ParameterValue]
    inputs: list[tuple[str, store.EntityRecord]]
    rights: list[str] | None  # the owner's data rights (None: an anonymous job)
    jobdef: JobDefinition | None = None
    reuse_key: str | None = None  # of a deterministic definition's job
    parent_jobdef: str | None = None  # the definition of the job that made this one

    @property
    def job_id(self) -> str:
        return self.job.id


def run_job(ctx: RunnerContext, job_id: str) -> str | None:
    """Run one job if it is still QUEUED; the phase it ended in (None if not claimed)."""
    now = utcnow()
    # The claim is one atomic statement; the parameters and inputs of a QUEUED job no longer
    # change (only the runner adds downloaded inputs): no transaction around the three.
    with ctx.db.statements() as conn:
        claimed = store.claim_with_parameters(conn, job_id, now, ctx.worker_name)
        if claimed is None:
            return None
        job, parameters = claimed
        jobdef = ctx.registry.get(job.jobdef)
        uses = jobdef is None or bool(jobdef.used)
        run = _Run(
            job,
            parameters,
            store.get_inputs(conn, job_id) if uses else [],
            accounts.rights_of(conn, job.owner) if job.owner else None,
        )
        if job.parent_id is not None:
            parent = store.get_job(conn, job.parent_id)
            run.parent_jobdef = parent.jobdef if parent else None
    ctx.notifier.publish(job_id)
    metrics.job_started(job)
    try:
        phase = _execute(ctx, run)
    except JobFailure as exc:
        phase = _finish(ctx, run, Phase.ERROR, error_message=str(exc), error_type="fatal")
    except Shutdown:
        phase = _finish(
            ctx,
            run,
            Phase.ERROR,
            error_type="transient",
            error_message="the server shut down while the job was executing",
        )
        raise
    except Exception as exc:
        log.exception("job %s failed inside the runner", job_id)
        phase = _finish(
            ctx,
            run,
            Phase.ERROR,
            error_type="transient",
            error_message=f"internal error while running the job: {type(exc).__name__}: {exc}",
        )
    return phase


def _finish(
    ctx: RunnerContext,
    run: _Run,
    phase: Phase,
    results: list[store.EntityRecord] | None = None,
    error_message: str | None = None,
    error_type: str | None = None,
    told: Told | None = None,
) -> str:
    """End the job in `phase` with its results and its provenance, in one transaction.

    A job aborted meanwhile keeps ABORTED (`phase` ABORTED: the runner saw the abort), and
    gets its provenance up to the abort. While the database is unreachable the runner
    tries again for a while: the results are on disk.
    """
    if results and phase == Phase.COMPLETED:
        try:  # in an object store, under keys of their own (nothing half-written)
            results = publish(ctx.settings, ctx.storage, results)
        except JobFailure as exc:
            phase, results, error_message, error_type = Phase.ERROR, None, str(exc), "transient"
    if error_message is not None:  # a process's stderr, a file name: shown in XML documents
        error_message = xml_safe(error_message)
    give_up = time.monotonic() + FINISH_RETRY_FOR
    tries = 0
    while True:
        try:
            ended = _finish_once(ctx, run, phase, results, error_message, error_type, told)
        except OperationalError as exc:
            if time.monotonic() > give_up:
                raise
            if tries == 0:
                log.warning("job %s: database unavailable, trying again: %s", run.job_id, exc.orig)
            tries += 1
            time.sleep(FINISH_RETRY_INTERVAL)
            continue
        if run.job.parent_id is not None:
            _advance(ctx, run.job.parent_id)
        return ended


def _finish_once(
    ctx: RunnerContext,
    run: _Run,
    phase: Phase,
    results: list[store.EntityRecord] | None,
    error_message: str | None,
    error_type: str | None,
    told: Told | None,
) -> str:
    now = utcnow()
    with ctx.db.write() as conn:
        moved = phase != Phase.ABORTED and store.finish(
            conn, run.job_id, phase, now, error_message, error_type
        )
        if moved and phase == Phase.COMPLETED and run.reuse_key:
            store.set_reuse_key(conn, run.job_id, run.reuse_key)
        kept = results if moved and results else []
        current = phase if moved else (store.get_phase(conn, run.job_id) or ("", "gone"))[1]
        # A service's job (a TAP query) reads the provenance store: were it recorded
        # there, every query would change what the next one finds.
        jobdef = run.jobdef
        if jobdef is None or jobdef.execution.service or current not in (phase, Phase.ABORTED):
            store.insert_entities(conn, kept)
        else:
            activity = job_activity(
                run.job,
                jobdef,
                run.parameters,
                run.inputs,
                kept,
                current,
                now,
                error_message,
                ctx.worker_name,
                ctx.settings.container_image_id,
                run.rights,
                told,
            )
            rows = [vars(e) for e in kept]
            record(conn, activity, also=[(store.entities, rows)])  # in the same batch
    if moved or current == Phase.ABORTED:  # ended here, or the abort seen here: once a job
        metrics.job_ended(run.job, current, now)
    ctx.notifier.publish(run.job_id)
    return current


def _execute(ctx: RunnerContext, run: _Run) -> str:
    job, job_id, parameters, inputs = run.job, run.job_id, run.parameters, run.inputs
    jobdef = ctx.registry.get(job.jobdef)
    if jobdef is None:
        raise JobFailure(f"job definition {job.jobdef!r} is not served any more")
    run.jobdef = jobdef

    root = workspace.job_root(ctx.settings, job_id)
    # A retry runs in a folder of its own: the lost attempt's process may still be running
    # (in its own session, on another host) and must not write into this one's results.
    run_root = root if job.attempts <= 1 else root / f"attempt{job.attempts}"
    workdir = run_root / "work"
    os.makedirs(workdir, exist_ok=True)
    values = {p.name: p.value for p in parameters if jobdef.parameter(p.name)}
    run.inputs = inputs = inputs + workspace.download_inputs(
        ctx.settings, ctx.storage, ctx.db, job_id, jobdef, parameters, {r for r, _ in inputs}, root
    )
    input_files = workspace.place_inputs(ctx.storage, jobdef, inputs, workdir)

    deadline = time.monotonic() + job.execution_duration
    if jobdef.execution.service is not None:
        return _serve(ctx, run, jobdef.execution.service, values, input_files, workdir, deadline)
    if jobdef.deterministic:
        run.reuse_key = reuse.reuse_key(jobdef, values, inputs, run.rights)
        if not reuse.wants_rerun(values):
            reused = _reuse(ctx, run, jobdef, workdir)
            if reused is not None:
                return reused
    if jobdef.execution.pipeline is not None or children.chunks_of(
        jobdef, run.parent_jobdef, [e for role, e in inputs if role == jobdef.chunk_role]
    ):
        return _start_children(ctx, run, jobdef)
    env = workspace.environment(ctx.settings, jobdef, values, input_files, run_root, run.rights)
    server = {
        "data_rights": run.rights or [],
        "real_data": str(ctx.settings.real_data_dir or ""),
        "staging_url": ctx.settings.staging_db_url,
    }
    argv = workspace.argv(jobdef, input_files, env, run_root, server)
    outcome = run_process(
        argv, env, workdir, run_root, deadline, _watcher(ctx, job_id), ctx.on_process_started
    )
    if outcome == "aborted":
        return _finish(ctx, run, Phase.ABORTED)
    if outcome == "timeout":
        raise JobFailure(
            f"the job ran past its execution duration of {job.execution_duration} s and was stopped"
        )
    results = collect_results(ctx.settings, jobdef, job_id, workdir)
    told = told_by(
        manifest.read(run_root / workspace.MANIFEST_NAME),
        inputs,
        input_files,
        _result_files(jobdef, results),
    )
    return _finish(ctx, run, Phase.COMPLETED, results=results, told=told)


def _result_files(jobdef: JobDefinition, results: list[store.EntityRecord]) -> dict[str, str]:
    """Each result's file name as the job wrote it (relative to its folder) -> its name."""
    fixed = {g.name: g.file_name for g in jobdef.generated if not g.is_pattern}
    return {fixed.get(r.name, r.name): r.name for r in results}


def _reuse(ctx: RunnerContext, run: _Run, jobdef: JobDefinition, workdir: Path) -> str | None:
    """End the job with an identical earlier job's results, if there is one."""
    assert run.reuse_key is not None
    with ctx.db.read() as conn:
        earlier = store.reusable(conn, run.reuse_key, run.job.owner, run.job_id)
        earlier_results = store.get_results(conn, earlier.id) if earlier else []
        refs = reuse.references(conn, earlier.id) if earlier else []
        spoiled = reuse.invalidated(conn, earlier.id) if earlier else False
    if (
        earlier is None
        or spoiled
        or not all(ctx.storage.exists(e.path) for e in earlier_results)
        or not reuse.unchanged(ctx.settings, refs)
    ):
        return None
    placed = reuse.place_reused(ctx.storage, jobdef, earlier_results, workdir)
    results = collect_results(ctx.settings, jobdef, run.job_id, workdir)
    told = Told(
        # what the earlier job read from the data folder: a later reuse checks it again
        used=[(entity_of(e), f"reused_{e.role}") for e in earlier_results] + refs,
        sources={
            name: [placed[f]] for f, name in _result_files(jobdef, results).items() if f in placed
        },
        names={q: [q] for q in placed.values()},
        comments=[reuse.reuse_note(earlier)],
        context={"reused_from": job_qname(earlier.id)},
    )
    return _finish(ctx, run, Phase.COMPLETED, results=results, told=told)


def _start_children(ctx: RunnerContext, run: _Run, jobdef: JobDefinition) -> str:
    """Queue the job's chunks or its pipeline's first step; it waits without a runner."""
    with ctx.db.write() as conn:
        if jobdef.execution.pipeline is not None:
            started = children.start_step(
                conn, jobdef, run.job, run.parameters, run.inputs, [], lambda j: []
            )
            made = [started] if started else []
        else:
            made = children.fan_out(conn, jobdef, run.job, run.parameters, run.inputs)
    ctx.submit(made)
    ctx.notifier.publish(run.job_id)
    return Phase.EXECUTING


def resume_parents(ctx: RunnerContext) -> None:
    """Move on the parents whose children have all ended unnoticed (for the sweeps)."""
    with ctx.db.read() as conn:
        stalled = store.stalled_parents(conn)
    for parent_id in stalled:
        log.warning("job %s: its children have ended; moving it on", parent_id)
        _advance(ctx, parent_id)


def _advance(ctx: RunnerContext, parent_id: str) -> None:
    """A child of `parent_id` has ended: queue the next step, or end the parent once all
    its children have (one runner does this, however many children end at once)."""
    with ctx.db.write() as conn:
        parent = store.take_waiting(conn, parent_id, ctx.worker_name)
        if parent is None:
            return
        kids = store.children(conn, parent_id)
        jobdef = ctx.registry.get(parent.jobdef)
        if not children.all_final(kids):
            store.wait_for_children(conn, parent_id)
            return
        run = _Run(
            parent,
            store.get_parameters(conn, parent_id),
            store.get_inputs(conn, parent_id),
            accounts.rights_of(conn, parent.owner) if parent.owner else None,
            jobdef,
        )
        if jobdef is not None and jobdef.deterministic:
            values = {p.name: p.value for p in run.parameters}
            run.reuse_key = reuse.reuse_key(jobdef, values, run.inputs, run.rights)
        failed = children.failed_child(kids)
        started = None
        if failed is None and jobdef is not None and jobdef.execution.pipeline is not None:
            started = children.start_step(
                conn,
                jobdef,
                parent,
                run.parameters,
                run.inputs,
                kids,
                lambda j: store.get_results(conn, j),
            )
        results = {k.id: store.get_results(conn, k.id) for k in kids}
    if started is not None:
        ctx.submit([started])
        return
    if jobdef is None:
        _finish(ctx, run, Phase.ERROR, error_message=f"job definition {parent.jobdef!r} is gone")
    elif failed is not None:
        message = (
            f"{failed.run_id or failed.id} ended in {failed.phase}: {failed.error_message or ''}"
        )
        _finish(ctx, run, Phase.ERROR, error_message=message.rstrip(": "), error_type="fatal")
    else:
        try:
            if jobdef.execution.pipeline is not None:
                ending = children.last_step_results(
                    ctx.settings, jobdef, parent_id, kids[-1], results.__getitem__
                )
            else:
                ending = children.merge_chunks(
                    ctx.settings, jobdef, parent_id, kids, results.__getitem__
                )
        except JobFailure as exc:
            _finish(ctx, run, Phase.ERROR, error_message=str(exc), error_type="fatal")
            return
        _finish(ctx, run, ending.phase, results=ending.results, told=ending.told)


def _serve(
    ctx: RunnerContext,
    run: _Run,
    target: str,
    values: dict[str, str],
    input_files: dict[str, list[str]],
    workdir: Path,
    deadline: float,
) -> str:
    """A service job: its function runs here (an ABORT meanwhile keeps the job ABORTED:
    its end does not move it)."""
    assert run.jobdef is not None
    job = ServiceJob(
        ctx.settings,
        ctx.db,
        run.job_id,
        run.job.owner,
        {p.name: p.value for p in run.parameters},
        {role: [workdir / name for name in names] for role, names in input_files.items()},
        workdir,
        deadline,
    )
    types = service_call.resolve(target)(job) or {}
    results = [
        replace(r, content_type=types.get(r.role, r.content_type))
        for r in collect_results(ctx.settings, run.jobdef, run.job_id, workdir)
    ]
    return _finish(ctx, run, Phase.COMPLETED, results=results)


def _watcher(ctx: RunnerContext, job_id: str) -> Callable[[], bool]:
    """While the job runs: whether it is still EXECUTING (not aborted, not destroyed), and
    a heartbeat every HEARTBEAT_INTERVAL. With the database away the job goes on."""
    read_phase = store.phase_reader(ctx.db)
    next_beat = time.monotonic() + HEARTBEAT_INTERVAL

    def still_wanted() -> bool:
        nonlocal next_beat
        try:
            state = read_phase(job_id)
            if state is None or state[1] != Phase.EXECUTING:
                return False
            if time.monotonic() >= next_beat:
                with ctx.db.write() as conn:
                    store.beat(conn, job_id, utcnow())
                next_beat = time.monotonic() + HEARTBEAT_INTERVAL
        except OperationalError as exc:  # the job goes on; ABORT waits for the database
            log.warning("job %s: database unavailable: %s", job_id, exc.orig)
            time.sleep(1.0)
        return True

    return still_wanted

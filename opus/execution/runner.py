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

from opus.config import Settings
from opus.execution import service_call, workspace
from opus.execution.failures import JobFailure, Shutdown
from opus.execution.notify import Notifier
from opus.execution.process import run_process
from opus.execution.recording import job_activity
from opus.execution.results import collect_results
from opus.execution.service_call import ServiceJob
from opus.jobdefs.model import JobDefinition
from opus.jobdefs.params import xml_safe
from opus.jobdefs.registry import Registry
from opus.phases import Phase
from opus.store import jobs as store
from opus.store import users as accounts
from opus.store.db import Database
from opus.timeutil import utcnow
from provenance.capture import record

__all__ = ["HEARTBEAT_INTERVAL", "JobFailure", "RunnerContext", "Shutdown", "lost_job", "run_job"]

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

    @property
    def job_id(self) -> str:
        return self.job.id


def run_job(ctx: RunnerContext, job_id: str) -> str | None:
    """Run one job if it is still QUEUED; the phase it ended in (None if not claimed)."""
    now = utcnow()
    # The claim is one atomic statement; the parameters and inputs of a QUEUED job no longer
    # change (only the runner adds downloaded inputs): no transaction around the three.
    with ctx.db.statements() as conn:
        job = store.claim(conn, job_id, now, ctx.worker_name)
        if job is None:
            return None
        jobdef = ctx.registry.get(job.jobdef)
        uses = jobdef is None or bool(jobdef.used)
        run = _Run(
            job,
            store.get_parameters(conn, job_id),
            store.get_inputs(conn, job_id) if uses else [],
            accounts.rights_of(conn, job.owner) if job.owner else None,
        )
    ctx.notifier.publish(job_id)
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
) -> str:
    """End the job in `phase` with its results and its provenance, in one transaction.

    A job aborted meanwhile keeps ABORTED (`phase` ABORTED: the runner saw the abort), and
    gets its provenance up to the abort. While the database is unreachable the runner
    tries again for a while: the results are on disk.
    """
    if error_message is not None:  # a process's stderr, a file name: shown in XML documents
        error_message = xml_safe(error_message)
    give_up = time.monotonic() + FINISH_RETRY_FOR
    tries = 0
    while True:
        try:
            return _finish_once(ctx, run, phase, results, error_message, error_type)
        except OperationalError as exc:
            if time.monotonic() > give_up:
                raise
            if tries == 0:
                log.warning("job %s: database unavailable, trying again: %s", run.job_id, exc.orig)
            tries += 1
            time.sleep(FINISH_RETRY_INTERVAL)


def _finish_once(
    ctx: RunnerContext,
    run: _Run,
    phase: Phase,
    results: list[store.EntityRecord] | None,
    error_message: str | None,
    error_type: str | None,
) -> str:
    now = utcnow()
    with ctx.db.write() as conn:
        moved = phase != Phase.ABORTED and store.finish(
            conn, run.job_id, phase, now, error_message, error_type
        )
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
            )
            rows = [vars(e) for e in kept]
            record(conn, activity, also=[(store.entities, rows)])  # in the same batch
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
        ctx.settings, ctx.db, job_id, jobdef, parameters, {r for r, _ in inputs}, root
    )
    input_files = workspace.place_inputs(ctx.settings, jobdef, inputs, workdir)

    deadline = time.monotonic() + job.execution_duration
    if jobdef.execution.service is not None:
        return _serve(ctx, run, jobdef.execution.service, values, input_files, workdir, deadline)
    env = workspace.environment(ctx.settings, jobdef, values, input_files, run_root, run.rights)
    argv = workspace.argv(jobdef, values, input_files, env, run_root, run.rights)
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
    return _finish(ctx, run, Phase.COMPLETED, results=results)


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

"""The job runner: claims a QUEUED job, runs what its definition declares, stores results.

The same runner serves every executor (the embedded executor's runner processes
and Celery workers). It runs the job's process in a session of its own, so that
ABORT, the execution-duration limit and a shutdown stop the whole process group.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import mimetypes
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from sqlalchemy.exc import OperationalError

from opus.config import Settings
from opus.execution.notify import Notifier
from opus.execution.orphans import RUNNER_PID
from opus.execution.recording import job_activity
from opus.ids import new_id
from opus.jobdefs.model import JobDefinition, ParameterDef
from opus.jobdefs.registry import Registry
from opus.store import jobs as store
from opus.store.db import Database
from opus.store.files import TooLarge, hash_file, safe_file_name, write_stream
from opus.timeutil import utcnow
from provenance.capture import record

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.2  # seconds between checks for ABORT while a job runs
HEARTBEAT_INTERVAL = 5.0  # seconds between "still running" marks (a lost worker stops them)
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
DOWNLOAD_LIMIT = 2**30
# While the database is away a runner tries to end its job every half second for a minute:
# often enough to be first when it comes back (before the sweep finds the job silent).
FINISH_RETRY_INTERVAL = 0.5
FINISH_RETRY_FOR = 60.0


class Shutdown(BaseException):
    """The runner's process was asked to stop (SIGTERM) while a job ran."""


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


class JobFailure(Exception):
    """The job ends in ERROR with this message."""


def lost_job(ctx: RunnerContext, job_id: str, reason: str) -> str | None:
    """A job still EXECUTING whose runner is gone goes back to QUEUED if its definition
    allows a retry and it has not had one (the caller dispatches it), else ends in ERROR.
    The phase it went to; None if it was not EXECUTING any more."""
    with ctx.db.write() as conn:
        job = store.get_job(conn, job_id)
        if job is None or job.phase != "EXECUTING":
            return None
        jobdef = ctx.registry.get(job.jobdef)
        retry = jobdef is not None and jobdef.retry_on_worker_loss
        if retry and job.attempts < 2:
            phase = "QUEUED"
            fields: dict[str, Any] = dict(start_time=None, worker=None, heartbeat=None)
        else:
            phase = "ERROR"
            fields = dict(
                end_time=utcnow(),
                error_type="transient",
                error_message=reason + ("; it had been retried once" if retry else ""),
            )
        if not store.change_phase(conn, job_id, phase, ["EXECUTING"], **fields):
            return None
    log.warning("job %s: %s: now %s", job_id, reason, phase)
    ctx.notifier.publish(job_id)
    return phase


def job_root(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id


@dataclass
class _Run:
    """What is known of a job while it runs: enough to record its provenance at any point."""

    job: store.JobRecord
    parameters: list[store.ParameterValue]
    inputs: list[tuple[str, store.EntityRecord]]
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
        job = store.claim_job(conn, job_id, now, ctx.worker_name)
        if job is None:
            return None
        jobdef = ctx.registry.get(job.jobdef)
        uses = jobdef is None or bool(jobdef.used)
        run = _Run(
            job,
            store.get_parameters(conn, job_id),
            store.get_inputs(conn, job_id) if uses else [],
        )
    ctx.notifier.publish(job_id)
    try:
        phase = _execute(ctx, run)
    except JobFailure as exc:
        phase = _finish(ctx, run, "ERROR", error_message=str(exc), error_type="fatal")
    except Shutdown:
        phase = _finish(
            ctx,
            run,
            "ERROR",
            error_type="transient",
            error_message="the server shut down while the job was executing",
        )
        raise
    except Exception as exc:
        log.exception("job %s failed inside the runner", job_id)
        phase = _finish(
            ctx,
            run,
            "ERROR",
            error_type="transient",
            error_message=f"internal error while running the job: {type(exc).__name__}: {exc}",
        )
    return phase


def _finish(
    ctx: RunnerContext,
    run: _Run,
    phase: str,
    results: list[dict[str, Any]] | None = None,
    error_message: str | None = None,
    error_type: str | None = None,
) -> str:
    """End the job in `phase` with its results and its provenance, in one transaction.

    A job aborted meanwhile keeps ABORTED, and gets its provenance up to the abort. While
    the database is unreachable the runner tries again for a while: the results are on disk.
    """
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
    phase: str,
    results: list[dict[str, Any]] | None,
    error_message: str | None,
    error_type: str | None,
) -> str:
    now = utcnow()
    with ctx.db.write() as conn:
        moved = store.end_job(conn, run.job_id, phase, now, error_message, error_type)
        kept = results if moved and results else []
        current = phase if moved else (store.get_phase(conn, run.job_id) or ("", "gone"))[1]
        if run.jobdef is None or current not in (phase, "ABORTED"):
            store.insert_entities(conn, kept)
        else:
            activity = job_activity(
                run.job,
                run.jobdef,
                run.parameters,
                run.inputs,
                kept,
                current,
                now,
                error_message,
                ctx.worker_name,
            )
            record(conn, activity, also=[(store.entities, kept)])  # in the same batch
    ctx.notifier.publish(run.job_id)
    return current


def _execute(ctx: RunnerContext, run: _Run) -> str:
    job, job_id, parameters, inputs = run.job, run.job_id, run.parameters, run.inputs
    jobdef = ctx.registry.get(job.jobdef)
    if jobdef is None:
        raise JobFailure(f"job definition {job.jobdef!r} is not served any more")
    run.jobdef = jobdef

    root = job_root(ctx.settings, job_id)
    # A retry runs in a folder of its own: the lost attempt's process may still be running
    # (in its own session, on another host) and must not write into this one's results.
    run_root = root if job.attempts <= 1 else root / f"attempt{job.attempts}"
    workdir = run_root / "work"
    os.makedirs(workdir, exist_ok=True)
    values = {p.name: p.value for p in parameters if jobdef.parameter(p.name)}
    run.inputs = inputs = inputs + _download_inputs(
        ctx, job_id, jobdef, parameters, {r for r, _ in inputs}, root
    )
    input_files = _place_inputs(ctx.settings, jobdef, inputs, workdir)

    env = _environment(ctx.settings, jobdef, values, input_files, run_root)
    argv = _argv(jobdef, values, input_files, env, run_root)
    deadline = time.monotonic() + job.execution_duration
    outcome = _run_process(ctx, job_id, argv, env, workdir, run_root, deadline)
    if outcome == "aborted":
        return _finish(ctx, run, "ABORTED")
    if outcome == "timeout":
        raise JobFailure(
            f"the job ran past its execution duration of {job.execution_duration} s and was stopped"
        )
    results = _collect_results(ctx.settings, jobdef, job_id, workdir)
    return _finish(ctx, run, "COMPLETED", results=results)


def _download_inputs(
    ctx: RunnerContext,
    job_id: str,
    jobdef: JobDefinition,
    parameters: list[store.ParameterValue],
    resolved_roles: set[str],
    root: Path,
) -> list[tuple[str, store.EntityRecord]]:
    """Fetch the used entities given by URL and record them as entities of this job."""
    rows: list[dict[str, Any]] = []
    folder = root / "downloads"
    for param in parameters:
        used = jobdef.used_entity(param.name)
        if used is None or param.name in resolved_roles or not param.by_reference:
            continue
        folder.mkdir(exist_ok=True)
        entity_id = new_id()
        target = folder / entity_id
        try:
            # The scheme (http or https) was checked when the job was submitted.
            with urllib.request.urlopen(param.value, timeout=60) as response:
                sha256, size = write_stream(response, target, DOWNLOAD_LIMIT)
                given_type = response.headers.get("Content-Type")
        except TooLarge:
            raise JobFailure(f"{param.name}: {param.value} is larger than 1 GiB") from None
        except OSError as exc:
            raise JobFailure(f"{param.name}: could not download {param.value}: {exc}") from None
        file_name = safe_file_name(param.value.split("?")[0]) or param.name
        rows.append(
            dict(
                id=entity_id,
                job_id=job_id,
                name=param.name,
                role=param.name,
                origin="download",
                path=str(target.relative_to(ctx.settings.data_dir)),
                file_name=file_name,
                content_type=given_type.split(";")[0].strip() if given_type else used.content_type,
                size=size,
                sha256=sha256,
                location=param.value,
                creation_time=utcnow(),
            )
        )
    if not rows:
        return []
    with ctx.db.write() as conn:
        store.insert_entities(conn, rows)
        store.replace_inputs(
            conn,
            job_id,
            [r["role"] for r in rows],
            [dict(role=r["role"], position=i, entity_id=r["id"]) for i, r in enumerate(rows)],
        )
    return [(r["role"], store.EntityRecord(**r)) for r in rows]


def _place_inputs(
    settings: Settings,
    jobdef: JobDefinition,
    inputs: list[tuple[str, store.EntityRecord]],
    workdir: Path,
) -> dict[str, list[str]]:
    """Copy each used entity's file into the working directory; role -> file names.

    A copy, not a link: a job that writes to its input must not change a stored entity.
    A name that a result would take (or a pattern would match) gets the role as prefix,
    so that a job never overwrites its input with its output."""
    placed: dict[str, list[str]] = {}
    taken: set[str] = set()
    for role, entity in inputs:
        name = safe_file_name(entity.file_name) or role
        if name in taken or any(fnmatch.fnmatch(name, g.file_name) for g in jobdef.generated):
            name = f"{role}_{len(placed.get(role, []))}_{name}"
        taken.add(name)
        source = settings.data_dir / entity.path
        if not source.is_file():
            raise JobFailure(f"{role}: the stored file of entity {entity.id} is gone")
        shutil.copyfile(source, workdir / name)
        placed.setdefault(role, []).append(name)
    return placed


def _environment(
    settings: Settings,
    jobdef: JobDefinition,
    values: dict[str, str],
    input_files: dict[str, list[str]],
    root: Path,
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(root),
        "TMPDIR": str(root),  # the job's own folder, outside the one results are taken from
        "LANG": "C.UTF-8",
        RUNNER_PID: str(os.getpid()),  # the job's processes are stopped if this one dies
    }
    for pdef in jobdef.parameters:
        if pdef.name in values:
            env[pdef.name] = values[pdef.name]
        elif pdef.default is not None:
            env[pdef.name] = pdef.default
    for used in jobdef.used:
        if used.name in input_files:
            env[used.name] = " ".join(input_files[used.name])
    for gen in jobdef.generated:
        env[gen.name] = gen.file_name
    return env


def _argv(
    jobdef: JobDefinition,
    values: dict[str, str],
    input_files: dict[str, list[str]],
    env: dict[str, str],
    root: Path,
) -> list[str]:
    execution = jobdef.execution
    if execution.script is not None:
        # The definition's text as one argument (no file to write): values reach it only
        # through the environment. $0 names the definition in bash's messages.
        return ["bash", "--noprofile", "--norc", "-c", execution.script, jobdef.name]
    if execution.command is not None:
        # Each element is one argument: a value never becomes shell syntax.
        return [Template(arg).safe_substitute(env) for arg in execution.command]
    call = root / "call.json"
    call.write_text(
        json.dumps(
            {
                "callable": execution.callable,
                "kwargs": _typed_kwargs(jobdef, env, input_files),
                "path": str(Path(jobdef.source).parent) if jobdef.source else "",
            }
        )
    )
    return [sys.executable, "-m", "opus.execution.call", str(call)]


def _typed_kwargs(
    jobdef: JobDefinition, env: dict[str, str], input_files: dict[str, list[str]]
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for pdef in jobdef.parameters:
        if pdef.name in env:
            kwargs[pdef.name] = _python_value(pdef, env[pdef.name])
    for used in jobdef.used:
        files = input_files.get(used.name, [])
        kwargs[used.name] = files if used.multiplicity != 1 else (files[0] if files else None)
    for gen in jobdef.generated:
        kwargs[gen.name] = gen.file_name
    return kwargs


def _python_value(pdef: ParameterDef, text: str) -> Any:
    if pdef.kind == "integer":
        return int(text)
    if pdef.kind == "real":
        return float(text)
    if pdef.kind == "boolean":
        return text.lower() in ("true", "1", "yes", "t", "y", "on")
    return text


def _run_process(
    ctx: RunnerContext,
    job_id: str,
    argv: list[str],
    env: dict[str, str],
    workdir: Path,
    root: Path,
    deadline: float,
) -> str:
    """'exited', 'aborted' or 'timeout'; raises JobFailure for a failed process."""
    with (root / "stdout.log").open("wb") as out, (root / "stderr.log").open("wb") as err:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise JobFailure(f"could not start {argv[0]}: {exc}") from None
    if ctx.on_process_started is not None:
        ctx.on_process_started(proc.pid)
    try:
        outcome = _supervise(ctx, job_id, proc, deadline)
    finally:
        _kill_group(proc)
    if outcome != "exited":
        return outcome
    if proc.returncode != 0:
        reason = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        tail = _tail(root / "stderr.log")
        raise JobFailure(f"the job's process {reason}" + (f": {tail}" if tail else ""))
    return outcome


def _supervise(
    ctx: RunnerContext, job_id: str, proc: subprocess.Popen[bytes], deadline: float
) -> str:
    read_phase = store.phase_reader(ctx.db)
    next_beat = time.monotonic() + HEARTBEAT_INTERVAL
    pidfd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if poller.poll(max(0.0, min(CHECK_INTERVAL, left)) * 1000):
                proc.wait()
                return "exited"
            if time.monotonic() >= deadline:
                return "timeout"
            try:
                state = read_phase(job_id)
                if state is None or state[1] != "EXECUTING":
                    return "aborted"
                if time.monotonic() >= next_beat:
                    with ctx.db.write() as conn:
                        store.update_job(conn, job_id, heartbeat=utcnow())
                    next_beat = time.monotonic() + HEARTBEAT_INTERVAL
            except OperationalError as exc:  # the job goes on; ABORT waits for the database
                log.warning("job %s: database unavailable: %s", job_id, exc.orig)
                time.sleep(1.0)
    finally:
        os.close(pidfd)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the job's process and everything it started (its process group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(KILL_GRACE)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_GRACE)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()


def _collect_results(
    settings: Settings, jobdef: JobDefinition, job_id: str, workdir: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    real_workdir = workdir.resolve()
    for gen in jobdef.generated:
        if gen.is_pattern:
            matches = sorted(p for p in workdir.glob(gen.file_name) if p.is_file())
        else:
            candidate = workdir / gen.file_name
            matches = [candidate] if candidate.is_file() else []
        if not matches and not gen.is_pattern:
            raise JobFailure(f"result {gen.name} ({gen.file_name}) was not produced")
        for path in matches:
            real = path.resolve()
            if not real.is_relative_to(real_workdir):
                raise JobFailure(f"result {gen.name}: {path.name} points outside the job directory")
            relative = path.relative_to(workdir).as_posix()
            result_id = relative if gen.is_pattern else gen.name
            if result_id in seen:
                continue
            seen.add(result_id)
            sha, size = hash_file(real)
            content_type = gen.content_type
            if gen.is_pattern and content_type == "application/octet-stream":
                content_type = mimetypes.guess_type(path.name)[0] or content_type
            rows.append(
                dict(
                    id=new_id(),
                    job_id=job_id,
                    name=result_id,
                    role=gen.name,
                    origin="result",
                    path=str(real.relative_to(settings.data_dir.resolve())),
                    file_name=path.name,
                    content_type=content_type,
                    size=size,
                    sha256=sha,
                    location=None,
                    creation_time=utcnow(),
                )
            )
    return rows

"""UWS 1.1 rules: creating jobs, phases, parameters, limits, WAIT, destruction.

Knows nothing of HTTP: routes hand it plain values and turn its errors
(opus.errors) into statuses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from opus.config import Settings
from opus.errors import Forbidden, NotFound, ParameterError
from opus.execution.dispatch import Dispatcher
from opus.execution.notify import Notifier, WaitHub
from opus.ids import is_id, new_id
from opus.jobdefs.model import JobDefinition, UsedDef
from opus.jobdefs.params import check_value
from opus.jobdefs.registry import Registry
from opus.store import jobs as store
from opus.store.db import Database
from opus.store.files import safe_file_name, write_stream
from opus.timeutil import parse_datetime, utcnow
from opus.uws.destruction import destroy_job

PHASES = (
    "PENDING",
    "QUEUED",
    "EXECUTING",
    "COMPLETED",
    "ERROR",
    "ABORTED",
    "UNKNOWN",
    "HELD",
    "SUSPENDED",
    "ARCHIVED",
)
BLOCKING_PHASES = ("PENDING", "QUEUED", "EXECUTING")
ABORTABLE = ("PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED")
CONTROL = ("PHASE", "RUNID", "EXECUTIONDURATION", "DESTRUCTION")
MAX_LAST = 100_000
MAX_LIST = 10_000  # longer lists are asked to use LAST (UWS 1.1 allows a 303 for that)


class ListTooLong(Exception):
    """The job list asked for is longer than MAX_LIST: ask again with LAST."""


@dataclass(frozen=True)
class Upload:
    """A file sent with a request: the parameter it is for and its bytes."""

    name: str
    file_name: str
    content_type: str
    stream: BinaryIO


@dataclass(frozen=True)
class JobView:
    job: store.JobRecord
    parameters: list[store.ParameterValue]
    results: list[store.EntityRecord]


@dataclass
class _Changes:
    """Parameter values and inputs parsed from one request, not yet stored."""

    parameters: list[dict[str, object]]
    inputs: list[dict[str, object]]
    entities: list[dict[str, object]]
    control: dict[str, str]


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

    # -- lookups ---------------------------------------------------------------------------

    def jobdef(self, name: str) -> JobDefinition:
        jobdef = self.registry.get(name)
        if jobdef is None:
            raise NotFound(f"no job definition named {name!r}")
        return jobdef

    def job(self, jobdef: str, job_id: str) -> store.JobRecord:
        self.jobdef(jobdef)
        with self.db.read() as conn:
            job = store.get_job(conn, job_id) if is_id(job_id) else None
        if job is None or job.jobdef != jobdef:
            raise NotFound(f"no job {job_id!r} in {jobdef}")
        return job

    def get(self, jobdef: str, job_id: str) -> JobView:
        """The job with its parameters and results."""
        job = self.job(jobdef, job_id)
        with self.db.read() as conn:
            return JobView(job, store.get_parameters(conn, job_id), store.get_results(conn, job_id))

    def phase(self, jobdef: str, job_id: str) -> str:
        self.jobdef(jobdef)
        found = self.read_phase(job_id) if is_id(job_id) else None
        if found is None or found[0] != jobdef:
            raise NotFound(f"no job {job_id!r} in {jobdef}")
        return found[1]

    def parameter(self, jobdef: str, job_id: str, name: str) -> list[store.ParameterValue]:
        values = [p for p in self.get(jobdef, job_id).parameters if p.name == name]
        if not values:
            raise NotFound(f"job {job_id} has no parameter {name!r}")
        return values

    def result(self, jobdef: str, job_id: str, result_id: str) -> store.EntityRecord:
        self.job(jobdef, job_id)
        with self.db.read() as conn:
            results = store.get_results(conn, job_id)
        for entity in results:
            if entity.name == result_id:
                return entity
        raise NotFound(f"job {job_id} has no result {result_id!r}")

    def entity(self, entity_id: str) -> store.EntityRecord:
        with self.db.read() as conn:
            entity = store.get_entity(conn, entity_id) if is_id(entity_id) else None
        if entity is None:
            raise NotFound(f"no stored entity {entity_id!r}")
        return entity

    # -- job list --------------------------------------------------------------------------

    def list_jobs(
        self,
        jobdef: str,
        phases: Sequence[str],
        after: str | None,
        last: str | None,
        owner: str | None = None,
    ) -> list[store.JobRecord]:
        self.jobdef(jobdef)
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
            if not last.strip().isdigit() or int(last) > MAX_LAST:
                raise ParameterError("LAST", f"{last!r} is not a whole number from 0 to {MAX_LAST}")
            last_n = int(last)
        with self.db.read() as conn:
            if (
                last_n is None
                and store.count_jobs(conn, jobdef, wanted, after_time, owner) > MAX_LIST
            ):
                raise ListTooLong()
            return store.list_jobs(conn, jobdef, wanted, after_time, last_n, owner)

    # -- creation and parameters -----------------------------------------------------------

    def create(
        self,
        jobdef_name: str,
        fields: Sequence[tuple[str, str]],
        uploads: Sequence[Upload],
        owner: str | None,
        base_url: str,
    ) -> str:
        """Create a job from request fields; PHASE=RUN queues it at once. Returns its id."""
        jobdef = self.jobdef(jobdef_name)
        job_id = new_id()
        changes = self._parse(jobdef, job_id, fields, uploads, base_url, creating=True)
        try:
            now = utcnow()
            control = changes.control
            run = self._run_requested(control)
            if len(control.get("RUNID", "")) > 256:
                raise ParameterError("RUNID", "longer than 256 characters")
            job = dict(
                id=job_id,
                jobdef=jobdef.name,
                run_id=control.get("RUNID"),
                owner=owner,
                phase="QUEUED" if run else "PENDING",
                creation_time=now,
                start_time=None,
                end_time=None,
                execution_duration=self._execution_duration(
                    jobdef, control.get("EXECUTIONDURATION")
                ),
                destruction=self._destruction(control.get("DESTRUCTION"), now),
                quote=now + timedelta(seconds=jobdef.quote) if jobdef.quote is not None else None,
                error_message=None,
                error_type=None,
                worker=None,
                dispatch_failed=False,
                heartbeat=None,
                attempts=0,
            )
            self._apply_defaults(jobdef, changes, base_url)
            if run:
                self._check_complete(jobdef, {str(p["name"]) for p in changes.parameters})
            with self.db.write() as conn:
                store.insert_entities(conn, changes.entities)
                store.insert_job(conn, job, changes.parameters, changes.inputs)
        except BaseException:
            self._discard_uploads(changes)
            raise
        if run:
            self.dispatcher.submit(job_id)
        return job_id

    def set_parameters(
        self,
        jobdef_name: str,
        job_id: str,
        fields: Sequence[tuple[str, str]],
        uploads: Sequence[Upload],
        base_url: str,
    ) -> None:
        jobdef = self.jobdef(jobdef_name)
        job = self.job(jobdef_name, job_id)
        if job.phase != "PENDING":
            raise Forbidden(f"job {job_id} is {job.phase}: parameters change only while PENDING")
        changes = self._parse(jobdef, job_id, fields, uploads, base_url, creating=False)
        try:
            with self.db.write() as conn:
                if store.get_phase(conn, job_id) != (jobdef.name, "PENDING"):
                    raise Forbidden(f"job {job_id} is no longer PENDING")
                store.insert_entities(conn, changes.entities)
                store.replace_parameters(conn, job_id, changes.parameters)
                roles = [
                    str(p["name"]) for p in changes.parameters if jobdef.used_entity(str(p["name"]))
                ]
                store.replace_inputs(conn, job_id, roles, changes.inputs)
        except BaseException:
            self._discard_uploads(changes)
            raise

    def _parse(
        self,
        jobdef: JobDefinition,
        job_id: str,
        fields: Sequence[tuple[str, str]],
        uploads: Sequence[Upload],
        base_url: str,
        creating: bool,
    ) -> _Changes:
        changes = _Changes([], [], [], {})
        positions: dict[str, int] = {}
        names = {p.name.lower(): p.name for p in jobdef.parameters}
        names |= {u.name.lower(): u.name for u in jobdef.used}
        for raw_name, value in fields:
            key = raw_name.upper()
            if creating and key in CONTROL:
                if key in changes.control:
                    raise ParameterError(key, "given more than once")
                changes.control[key] = value
                continue
            name = raw_name if raw_name in names.values() else names.get(raw_name.lower())
            if name is None:
                raise ParameterError(raw_name, self._unknown(jobdef, creating))
            position = positions.get(name, 0)
            positions[name] = position + 1
            used = jobdef.used_entity(name)
            if used is None:
                pdef = jobdef.parameter(name)
                assert pdef is not None
                if position:
                    raise ParameterError(name, "given more than once")
                changes.parameters.append(
                    dict(name=name, position=0, value=check_value(pdef, value), by_reference=False)
                )
            else:
                self._check_multiplicity(used, position)
                self._reference(used, value, position, changes, base_url)
        upload_roles = {u.name.lower(): u.name for u in jobdef.used}
        for upload in uploads:
            role = upload_roles.get(upload.name.lower())
            if role is None:
                raise ParameterError(upload.name, "no input of this definition takes a file")
            used = jobdef.used_entity(role)
            assert used is not None
            position = positions.get(role, 0)
            positions[role] = position + 1
            self._check_multiplicity(used, position)
            entity = self._store_upload(job_id, used, upload, changes)
            changes.parameters.append(
                dict(name=role, position=position, value=f"opus:ent_{entity}", by_reference=True)
            )
            changes.inputs.append(dict(role=role, position=position, entity_id=entity))
        return changes

    @staticmethod
    def _unknown(jobdef: JobDefinition, creating: bool) -> str:
        known = [p.name for p in jobdef.parameters] + [u.name for u in jobdef.used]
        extra = f" and {', '.join(CONTROL)}" if creating else ""
        return f"unknown parameter for {jobdef.name}; known: {', '.join(known) or 'none'}{extra}"

    @staticmethod
    def _check_multiplicity(used: UsedDef, position: int) -> None:
        if used.multiplicity != "*" and position >= used.multiplicity:
            raise ParameterError(used.name, f"takes at most {used.multiplicity} value(s)")

    def _reference(
        self, used: UsedDef, value: str, position: int, changes: _Changes, base_url: str
    ) -> None:
        """An input given as a stored entity id, a URL of this server, another URL, or an id
        for the definition's URL template."""
        text = value.strip()
        template = used.url_template or ""
        if "://" not in text and template and not template.startswith("file://"):
            text = template.replace("${ID}", text).replace("$ID", text)
        entity_id = self._local_entity(used.name, text, base_url)
        if entity_id is not None:
            changes.parameters.append(
                dict(
                    name=used.name,
                    position=position,
                    value=f"opus:ent_{entity_id}",
                    by_reference=True,
                )
            )
            changes.inputs.append(dict(role=used.name, position=position, entity_id=entity_id))
            return
        if urlsplit(text).scheme.lower() not in ("http", "https"):
            raise ParameterError(
                used.name,
                f"{value!r} is not a stored entity id, nor an http(s) URL; upload a file instead",
            )
        changes.parameters.append(
            dict(name=used.name, position=position, value=text, by_reference=True)
        )

    def _local_entity(self, name: str, text: str, base_url: str) -> str | None:
        """The id of the stored entity `text` names (an id, opus:ent_<id>, or a URL of this
        server's /store or results); None for anything else."""
        parts = urlsplit(text)
        base = urlsplit(base_url)
        candidate: str | None = None
        if parts.scheme in ("http", "https") and parts.netloc == base.netloc:
            path = unquote(parts.path).removeprefix(base.path.rstrip("/"))
            segments = path.strip("/").split("/")
            if len(segments) == 2 and segments[0] == "store":
                candidate = segments[1]
            elif len(segments) >= 5 and segments[0] == "rest" and segments[3] == "results":
                try:
                    return self.result(segments[1], segments[2], "/".join(segments[4:])).id
                except NotFound as exc:
                    raise ParameterError(name, exc.message) from None
            elif segments[0] in ("rest", "jdl"):
                raise ParameterError(name, f"{text} is not a file: give one of a job's results")
        elif not parts.scheme or parts.scheme == "opus":
            candidate = text.removeprefix("opus:").removeprefix("ent_")
            if not is_id(candidate):
                return None
        if candidate is None:
            return None
        with self.db.read() as conn:
            found = store.get_entity(conn, candidate) if is_id(candidate) else None
        if found is None:
            raise ParameterError(name, f"no stored entity {candidate!r}")
        return found.id

    def _store_upload(self, job_id: str, used: UsedDef, upload: Upload, changes: _Changes) -> str:
        entity_id = new_id()
        folder = self.settings.uploads_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / entity_id
        sha256, size = write_stream(upload.stream, target)
        changes.entities.append(
            dict(
                id=entity_id,
                job_id=job_id,
                name=used.name,
                role=used.name,
                origin="upload",
                path=str(target.relative_to(self.settings.data_dir)),
                file_name=safe_file_name(upload.file_name) or used.name,
                content_type=upload.content_type or used.content_type,
                size=size,
                sha256=sha256,
                location=None,
                creation_time=utcnow(),
            )
        )
        return entity_id

    def _discard_uploads(self, changes: _Changes) -> None:
        for entity in changes.entities:
            with contextlib.suppress(OSError):
                (self.settings.data_dir / str(entity["path"])).unlink()

    def _apply_defaults(self, jobdef: JobDefinition, changes: _Changes, base_url: str) -> None:
        """Record every parameter's value, defaults included: the job's full configuration."""
        given = {str(p["name"]) for p in changes.parameters}
        for pdef in jobdef.parameters:
            if pdef.name not in given and pdef.default is not None:
                changes.parameters.append(
                    dict(name=pdef.name, position=0, value=pdef.default, by_reference=False)
                )
        for used in jobdef.used:
            if used.name in given or not used.default:
                continue
            # OPUS defaults may name a file of the old server ("input.txt"): such a default
            # cannot be resolved here, and the input must then be given.
            with contextlib.suppress(ParameterError):
                self._reference(used, used.default, 0, changes, base_url)

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

    def change_phase(self, jobdef_name: str, job_id: str, value: str) -> None:
        action = value.strip().upper()
        job = self.job(jobdef_name, job_id)
        if action == "RUN":
            self._run(jobdef_name, job)
        elif action == "ABORT":
            self._abort(job)
        elif action in ("SUSPEND", "ARCHIVE"):
            raise ParameterError(
                "PHASE", f"{action} is not supported by this server; use RUN or ABORT"
            )
        else:
            raise ParameterError("PHASE", f"{value!r} is not RUN or ABORT")

    def _run(self, jobdef_name: str, job: store.JobRecord) -> None:
        if job.phase in ("QUEUED", "EXECUTING"):
            return  # already on its way: RUN again changes nothing
        if job.phase not in ("PENDING", "HELD"):
            raise Forbidden(f"job {job.id} is {job.phase}: only a PENDING job can be run")
        jobdef = self.jobdef(jobdef_name)
        with self.db.write() as conn:
            given = {p.name for p in store.get_parameters(conn, job.id)}
            self._check_complete(jobdef, given)
            quote = utcnow() + timedelta(seconds=jobdef.quote) if jobdef.quote is not None else None
            moved = store.change_phase(conn, job.id, "QUEUED", ["PENDING", "HELD"], quote=quote)
        if not moved:
            raise Forbidden(f"job {job.id} is no longer PENDING")
        self.notifier.publish(job.id)
        self.dispatcher.submit(job.id)

    def _abort(self, job: store.JobRecord) -> None:
        if job.phase == "ABORTED":
            return
        with self.db.write() as conn:
            moved = store.change_phase(
                conn,
                job.id,
                "ABORTED",
                ABORTABLE,
                end_time=utcnow(),
                error_message="aborted at the owner's request",
                error_type="fatal",
            )
            current = store.get_phase(conn, job.id)
        if not moved:
            phase = current[1] if current else "gone"
            raise Forbidden(f"job {job.id} is {phase}: it can no longer be aborted")
        self.notifier.publish(job.id)

    # -- limits ----------------------------------------------------------------------------

    def _execution_duration(self, jobdef: JobDefinition, raw: str | None) -> int:
        limit = self.settings.max_execution_duration
        wanted = jobdef.execution_duration or limit
        if raw is not None:
            try:
                wanted = int(raw.strip())
            except ValueError:
                raise ParameterError(
                    "EXECUTIONDURATION", f"{raw!r} is not a whole number of seconds"
                ) from None
            if wanted < 0:
                raise ParameterError("EXECUTIONDURATION", f"{raw!r} is negative")
        # 0 asks for no limit: this server always has one, and says so by the value it keeps.
        return limit if wanted == 0 else min(wanted, limit)

    def _destruction(self, raw: str | None, now: datetime) -> datetime:
        latest = now + timedelta(days=self.settings.max_destruction_days)
        if raw is None:
            return now + timedelta(days=self.settings.default_destruction_days)
        try:
            wanted = parse_datetime(raw)
        except ValueError as exc:
            raise ParameterError("DESTRUCTION", str(exc)) from None
        return min(wanted, latest)

    def set_execution_duration(self, jobdef_name: str, job_id: str, raw: str | None) -> None:
        if raw is None:
            raise ParameterError("EXECUTIONDURATION", "missing")
        job = self.job(jobdef_name, job_id)
        if job.phase != "PENDING":
            raise Forbidden(f"job {job_id} is {job.phase}: its execution duration is fixed")
        value = self._execution_duration(self.jobdef(jobdef_name), raw)
        with self.db.write() as conn:
            store.update_job(conn, job_id, execution_duration=value)

    def set_destruction(self, jobdef_name: str, job_id: str, raw: str | None) -> None:
        if raw is None:
            raise ParameterError("DESTRUCTION", "missing")
        self.job(jobdef_name, job_id)
        value = self._destruction(raw, utcnow())
        with self.db.write() as conn:
            store.update_job(conn, job_id, destruction=value)

    # -- WAIT ------------------------------------------------------------------------------

    def wait(self, jobdef_name: str, job_id: str, wait: str, phase: str | None) -> None:
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
        current = self.phase(jobdef_name, job_id)
        if seconds == 0 or current not in BLOCKING_PHASES:
            return
        if wanted is not None and wanted != current:
            return

        def unchanged() -> bool:
            found = self.read_phase(job_id)
            return found is not None and found[1] == current

        self.waits.wait(job_id, float(seconds), unchanged)

    # -- deletion --------------------------------------------------------------------------

    def delete(self, jobdef_name: str, job_id: str) -> None:
        self.job(jobdef_name, job_id)
        destroy_job(self.settings, self.db, self.notifier, job_id)

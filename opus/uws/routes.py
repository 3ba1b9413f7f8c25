"""UWS 1.1 HTTP resources: parse the request, call the service, render. No rules here."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import bottle

from opus.config import Settings
from opus.errors import BadRequest, NotFound, ParameterError, Unavailable
from opus.http import (
    Handler,
    base_url,
    caller,
    content_disposition,
    query_value,
    query_values,
    router,
    see_other,
    text,
    xml_body,
)
from opus.store.files import stored_file
from opus.store.objects import ObjectMissing, Storage, StoreUnavailable
from opus.store.schedules import ScheduleRecord
from opus.timeutil import format_datetime
from opus.uws import xml
from opus.uws.binding import Upload
from opus.uws.schedules import ScheduleService
from opus.uws.service import MAX_LIST, JobService, ListTooLong


def form_fields() -> tuple[list[tuple[str, str]], list[Upload]]:
    """The posted form (urlencoded or multipart): plain fields and uploaded files."""
    request = bottle.request
    try:
        fields = list(request.forms.decode().allitems())
        files = list(request.files.allitems())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not a readable form: {exc}") from None
    uploads = [
        Upload(name, upload.raw_filename or name, upload.content_type or "", upload.file)
        for name, upload in files
    ]
    return fields, uploads


def form_value(fields: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in fields if k.upper() == name]
    if len(values) > 1:
        raise ParameterError(name, "given more than once")
    return values[0] if values else None


def install(app: bottle.Bottle, service: JobService, settings: Settings) -> None:
    """Every definition's job list at /rest/<jobdef>, and /store."""
    mount(app, service, settings, "/rest/<jobdef>")

    @router(app)("/store/<entity_id>")
    def stored(entity_id: str) -> bottle.HTTPResponse:
        return serve_entity(service.entity(caller(), entity_id), settings, service.storage)


Create = Callable[
    [str, list[tuple[str, str]], list[Upload]], tuple[list[tuple[str, str]], list[Upload]]
]


def mount(
    app: bottle.Bottle,
    service: JobService,
    settings: Settings,
    path: str,
    jobdef: str | None = None,
    prepare: Create | None = None,
    error_document: Callable[[str], tuple[bytes, str]] | None = None,
) -> None:
    """The UWS resources of a job list at `path`: every definition's (`path` holds
    `<jobdef>`) or one definition's (`jobdef`, as /tap/async serves the `tap` jobs).
    `prepare` turns a creating request's fields and files into the definition's;
    `error_document` writes a job's /error (body, content type) in place of the text."""
    add_route = router(app)

    def route(rule: str, method: str = "GET") -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            full = path + rule
            if jobdef is None:
                add_route(full, method)(handler)
            else:
                fixed = functools.wraps(handler)(lambda **kw: handler(jobdef=jobdef, **kw))
                add_route(full, method)(fixed)
            return handler

        return register

    def list_url(name: str) -> str:
        return f"{base_url()}{path.replace('<jobdef>', name)}"

    def job_url(name: str, job_id: str) -> str:
        return f"{list_url(name)}/{job_id}"

    @route("")
    def job_list(jobdef: str) -> bytes | bottle.HTTPResponse:
        try:
            jobs = service.list_jobs(
                caller(), jobdef, query_values("PHASE"), query_value("AFTER"), query_value("LAST")
            )
        except ListTooLong:
            query = bottle.request.query_string
            return see_other(f"{bottle.request.url}{'&' if query else '?'}LAST={MAX_LIST}")
        return xml_body(xml.job_list(jobs, list_url(jobdef)))

    @route("", "POST")
    def create(jobdef: str) -> bottle.HTTPResponse:
        fields, uploads = form_fields()
        if prepare is not None:
            fields, uploads = prepare(base_url(), fields, uploads)
        job_id = service.create(caller(), jobdef, fields, uploads, base_url())
        return see_other(job_url(jobdef, job_id))

    @route("/<job_id>")
    def job(jobdef: str, job_id: str) -> bytes:
        wait = query_value("WAIT")
        if wait is not None:
            service.wait(caller(), jobdef, job_id, wait, query_value("PHASE"))
        return xml_body(
            xml.job_document(service.get(caller(), jobdef, job_id), job_url(jobdef, job_id))
        )

    @route("/<job_id>", "POST")
    def post_job(jobdef: str, job_id: str) -> bottle.HTTPResponse:
        fields, uploads = form_fields()
        action = form_value(fields, "ACTION")
        if action is not None:
            if action.strip().upper() != "DELETE":
                raise ParameterError("ACTION", f"{action!r}: the only action is DELETE")
            service.delete(caller(), jobdef, job_id)
            return see_other(list_url(jobdef))
        phase = form_value(fields, "PHASE")
        parameters = [(k, v) for k, v in fields if k.upper() != "PHASE"]
        if parameters or uploads:
            service.set_parameters(caller(), jobdef, job_id, parameters, uploads, base_url())
        if phase is not None:
            service.change_phase(caller(), jobdef, job_id, phase)
        return see_other(job_url(jobdef, job_id))

    @route("/<job_id>", "DELETE")
    def delete_job(jobdef: str, job_id: str) -> bottle.HTTPResponse:
        service.delete(caller(), jobdef, job_id)
        return see_other(list_url(jobdef))

    @route("/<job_id>/phase")
    def phase(jobdef: str, job_id: str) -> str:
        return text(service.phase(caller(), jobdef, job_id))

    @route("/<job_id>/phase", "POST")
    def post_phase(jobdef: str, job_id: str) -> bottle.HTTPResponse:
        fields, _ = form_fields()
        value = form_value(fields, "PHASE")
        if value is None:
            raise ParameterError("PHASE", "missing: post PHASE=RUN or PHASE=ABORT")
        service.change_phase(caller(), jobdef, job_id, value)
        return see_other(job_url(jobdef, job_id))

    @route("/<job_id>/executionduration")
    def execution_duration(jobdef: str, job_id: str) -> str:
        return text(str(service.job(caller(), jobdef, job_id).execution_duration))

    @route("/<job_id>/executionduration", "POST")
    def post_execution_duration(jobdef: str, job_id: str) -> bottle.HTTPResponse:
        fields, _ = form_fields()
        service.set_execution_duration(
            caller(), jobdef, job_id, form_value(fields, "EXECUTIONDURATION")
        )
        return see_other(job_url(jobdef, job_id))

    @route("/<job_id>/destruction")
    def destruction(jobdef: str, job_id: str) -> str:
        return text(format_datetime(service.job(caller(), jobdef, job_id).destruction))

    @route("/<job_id>/destruction", "POST")
    def post_destruction(jobdef: str, job_id: str) -> bottle.HTTPResponse:
        fields, _ = form_fields()
        service.set_destruction(caller(), jobdef, job_id, form_value(fields, "DESTRUCTION"))
        return see_other(job_url(jobdef, job_id))

    @route("/<job_id>/quote")
    def quote(jobdef: str, job_id: str) -> str:
        return text(format_datetime(service.job(caller(), jobdef, job_id).quote))

    @route("/<job_id>/error")
    def error(jobdef: str, job_id: str) -> str | bytes:
        message = service.job(caller(), jobdef, job_id).error or ""
        if error_document is None:
            return text(message)
        body, content_type = error_document(message)
        bottle.response.content_type = content_type
        return body

    @route("/<job_id>/owner")
    def owner(jobdef: str, job_id: str) -> str:
        return text(service.job(caller(), jobdef, job_id).owner or "")

    @route("/<job_id>/parameters")
    def parameters(jobdef: str, job_id: str) -> bytes:
        return xml_body(xml.parameters_document(service.get(caller(), jobdef, job_id).parameters))

    @route("/<job_id>/parameters", "POST")
    def post_parameters(jobdef: str, job_id: str) -> bottle.HTTPResponse:
        fields, uploads = form_fields()
        service.set_parameters(caller(), jobdef, job_id, fields, uploads, base_url())
        return see_other(job_url(jobdef, job_id))

    @route("/<job_id>/parameters/<name>")
    def parameter(jobdef: str, job_id: str, name: str) -> str:
        return text("\n".join(p.value for p in service.parameter(caller(), jobdef, job_id, name)))

    @route("/<job_id>/parameters/<name>", "PUT")
    def put_parameter(jobdef: str, job_id: str, name: str) -> bottle.HTTPResponse:
        body = bottle.request.body.read((1 << 16) + 1)
        try:
            value = body.decode()
        except UnicodeDecodeError:
            raise ParameterError(name, "the value is not UTF-8 text") from None
        service.set_parameters(caller(), jobdef, job_id, [(name, value)], [], base_url())
        return see_other(job_url(jobdef, job_id))

    @route("/<job_id>/results")
    def results(jobdef: str, job_id: str) -> bytes:
        view = service.get(caller(), jobdef, job_id)
        return xml_body(xml.results_document(view.results, job_url(jobdef, job_id)))

    @route("/<job_id>/results/<result_id:path>")
    def result(jobdef: str, job_id: str, result_id: str) -> bottle.HTTPResponse:
        entity = service.result(caller(), jobdef, job_id, result_id)
        return serve_entity(entity, settings, service.storage)


def serve_entity(entity: Any, settings: Settings, storage: Storage) -> bottle.HTTPResponse:
    """A stored file's bytes: from the data folder (ranges, conditional requests), or from
    an object store streamed through here or by a redirect to a short-lived presigned
    URL (OPUS_S3_PRESIGNED); the same checksum header either way."""
    headers = {
        "Content-Disposition": content_disposition(entity.file_name),
        "X-Content-SHA256": entity.sha256,
        # what a client uploaded or a job wrote: never run as a page of this server
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    if not storage.remote:
        if stored_file(settings.data_dir, entity.path) is None:
            raise NotFound(f"the stored file of {entity.name} was replaced: it is not served")
        response: bottle.HTTPResponse = bottle.static_file(
            entity.path, root=str(settings.data_dir), mimetype=entity.content_type, headers=headers
        )
        return response
    try:
        if settings.s3_presigned:
            url = storage.url(entity.path, entity.content_type, headers["Content-Disposition"])
            return bottle.HTTPResponse(status=307, headers={**headers, "Location": url})
        size = storage.size(entity.path)
        chunks = storage.stream(entity.path)
    except ObjectMissing:
        raise NotFound(f"the stored file of {entity.name} is gone") from None
    except StoreUnavailable as exc:
        raise Unavailable(f"the object store is unreachable ({exc})") from None
    headers |= {"Content-Type": entity.content_type, "Content-Length": str(size)}
    if bottle.request.method == "HEAD":
        chunks.close()
        return bottle.HTTPResponse(status=200, headers=headers)
    return bottle.HTTPResponse(chunks, status=200, headers=headers)


# a schedule's own fields in its creating request; the others are the job's
SCHEDULE_FIELDS = ("EVERY", "CRON", "OWNER")


def install_schedules(app: bottle.Bottle, schedules: ScheduleService) -> None:
    """Periodic jobs, for administrators: /schedules (list), POST /schedules/<jobdef>
    (EVERY=5m or CRON='0 * * * *', OWNER, then the job's values), GET and DELETE
    /schedules/<id>."""
    route = router(app)

    def document(record: ScheduleRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "url": f"{base_url()}/schedules/{record.id}",
            "owner": record.owner,
            "jobdef": record.jobdef,
            "every": record.every,
            "cron": record.cron,
            "parameters": [list(field) for field in record.fields],
            "next_run": format_datetime(record.next_run),
            "last_job": record.last_job_id,
            "created": format_datetime(record.created),
        }

    @route("/schedules")
    def schedule_list() -> dict[str, Any]:
        return {"schedules": [document(s) for s in schedules.all(caller())]}

    @route("/schedules/<jobdef>", "POST")
    def add(jobdef: str) -> bottle.HTTPResponse:
        fields, uploads = form_fields()
        if uploads:
            raise BadRequest("a schedule takes no files: give inputs as stored entity ids or URLs")
        own = {name: form_value(fields, name) for name in SCHEDULE_FIELDS}
        rest = [(k, v) for k, v in fields if k.upper() not in SCHEDULE_FIELDS]
        record = schedules.add(
            caller(), own["OWNER"], jobdef, rest, base_url(), own["EVERY"], own["CRON"]
        )
        url = f"{base_url()}/schedules/{record.id}"
        return bottle.HTTPResponse(document(record), status=201, headers={"Location": url})

    @route("/schedules/<schedule_id>")
    def one(schedule_id: str) -> dict[str, Any]:
        return document(schedules.get(caller(), schedule_id))

    @route("/schedules/<schedule_id>", "DELETE")
    def remove(schedule_id: str) -> bottle.HTTPResponse:
        schedules.remove(caller(), schedule_id)
        return bottle.HTTPResponse(status=204)

"""TAP 1.1 HTTP resources: /tap, /tap/sync, /tap/async (the UWS engine's, for the `tap`
definition), /tap/tables, /tap/capabilities, /tap/availability, /tap/examples."""

from __future__ import annotations

import io

import bottle

from opus.config import Settings
from opus.errors import NotFound, ParameterError
from opus.http import XML, base_url, caller, router
from opus.tap import documents
from opus.tap.examples import examples
from opus.tap.results import FORMATS, error_document
from opus.tap.schema import BY_NAME
from opus.tap.service import TAP_PARAMETERS, TapError, TapService
from opus.tap.upload import UploadError, parse_upload_list
from opus.uws import routes as uws_routes
from opus.uws.binding import CONTROL, Upload
from opus.uws.service import JobService

TAP_JOBDEF = "tap"
# Sent by clients (pyvo, TOPCAT) and kept: the TAP parameters, UWS's own, the uploads.
KEPT = frozenset(TAP_PARAMETERS) | frozenset(CONTROL)
HTML = "application/xhtml+xml; charset=utf-8"


def install(
    app: bottle.Bottle,
    tap: TapService,
    jobs: JobService,
    settings: Settings,
) -> None:
    route = router(app)

    def fields_and_parts() -> tuple[list[tuple[str, str]], dict[str, bytes]]:
        fields, uploads = uws_routes.form_fields()
        if bottle.request.method == "GET":
            fields = list(bottle.request.query.decode().allitems())
        parts = {u.name: u.stream.read(settings.tap_upload_max_bytes + 1) for u in uploads}
        return fields, parts

    @route("/tap")
    def landing() -> bytes:
        bottle.response.content_type = HTML
        base = f"{base_url()}/tap"
        links = "".join(
            f'<li><a href="{base}/{p}">{p}</a></li>'
            for p in ("sync", "async", "tables", "capabilities", "availability", "examples")
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
            "<head><title>ProvTAP</title></head><body><h1>ProvTAP</h1>"
            "<p>TAP 1.1 over the provenance of this server's jobs.</p>"
            f"<ul>{links}</ul></body></html>"
        ).encode()

    @route("/tap/sync")
    @route("/tap/sync", "POST")
    def sync() -> bytes:
        fields, parts = fields_and_parts()
        body, fmt, _ = tap.sync(caller(), fields, parts, base_url())
        bottle.response.content_type = FORMATS[fmt]
        return body

    def prepare(
        base: str, fields: list[tuple[str, str]], uploads: list[Upload]
    ) -> tuple[list[tuple[str, str]], list[Upload]]:
        """A creating request's fields as the `tap` definition takes them: unknown
        parameters dropped, uploads in the order UPLOAD names them (URLs fetched now:
        the runner gets files), and the base URL the result's identifiers are under."""
        kept = [(k, v) for k, v in fields if k.upper() in KEPT and k.upper() != "BASE_URL"]
        kept.append(("BASE_URL", tap.base(base)))
        by_part = {u.name: u for u in uploads}
        try:  # the rest is checked when the job runs: a bad query is a job in ERROR
            listed = [
                t
                for k, v in kept
                if k.upper() == "UPLOAD" and v.strip()
                for t in parse_upload_list(v)
            ]
            files: list[Upload] = []
            for name, uri in listed:
                if uri.startswith("param:") and uri.removeprefix("param:") in by_part:
                    upload = by_part[uri.removeprefix("param:")]
                    files.append(Upload("tap_upload", name, upload.content_type, upload.stream))
                else:
                    data = tap.upload_bytes(uri, {}, name)
                    files.append(
                        Upload("tap_upload", name, "application/x-votable+xml", io.BytesIO(data))
                    )
        except (TapError, UploadError) as exc:
            raise ParameterError("UPLOAD", str(exc)) from None
        return kept, files

    def job_error(message: str) -> tuple[bytes, str]:  # TAP: an async job's error is a VOTable
        return error_document(message), FORMATS["votable"]

    uws_routes.mount(
        app,
        jobs,
        settings,
        "/tap/async",
        jobdef=TAP_JOBDEF,
        prepare=prepare,
        error_document=job_error,
    )

    @route("/tap/tables")
    def tables() -> bytes:
        detail = (bottle.request.query.get("detail") or "max").lower()
        bottle.response.content_type = XML
        return documents.tableset("min" if detail == "min" else "max")

    @route("/tap/tables/<name>")
    def table(name: str) -> bytes:
        found = BY_NAME.get(name.lower())
        if found is None:
            raise NotFound(f"no table {name!r}: see /tap/tables")
        bottle.response.content_type = XML
        return documents.one_table(found)

    @route("/tap/capabilities")
    def capabilities() -> bytes:
        bottle.response.content_type = XML
        return documents.capabilities(
            tap.base(base_url()), settings, settings.anonymous, settings.default_destruction_days
        )

    @route("/tap/examples")
    def examples_page() -> bytes:
        base = tap.base(base_url())
        entity, activity = tap.newest(caller(), base)
        bottle.response.content_type = HTML
        return documents.examples_page(examples(entity, activity), f"{base}/tap")

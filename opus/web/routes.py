"""The web pages' HTTP: sign-in and out, home, submission forms, job list and job pages.

Routes parse the request, call the same services as the REST API and render templates
(autoescaped: no value reaches a page unescaped). A form that changes something carries
the session's CSRF token; the session cookie is HttpOnly, SameSite=Lax, and Secure when
the request came over TLS.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import bottle
from jinja2 import Environment, FileSystemLoader, select_autoescape

from opus.accounts import Accounts
from opus.auth import Caller, Identities
from opus.config import Settings
from opus.errors import NotFound, OpusError, ParameterError, Unauthorized
from opus.http import base_url, caller, router, see_other
from opus.ids import entity_qname, job_qname, namespace_uri
from opus.jobdefs.model import JobDefinition
from opus.phases import FINAL
from opus.provsap.service import ProvenanceService, Request
from opus.store.jobs import EntityRecord, JobRecord
from opus.store.objects import readable
from opus.tap.examples import examples
from opus.tap.service import TapError, TapService, tap_request
from opus.timeutil import format_datetime, utcnow
from opus.uws.routes import form_fields
from opus.uws.service import JobService
from opus.web.forms import form_of
from opus.web.lineage import lineage, merged, page_link, steps
from opus.web.previews import Preview, fits_png, preview
from opus.web.session import COOKIE, LIFETIME, VISITOR, Sessions
from provenance.document import Document
from provenance.query import Direction

TEMPLATES = Path(str(resources.files("opus.templates")))
STATIC = Path(str(resources.files("opus.static")))
HTML = "text/html; charset=utf-8"
RECENT = 10  # jobs on the home page
PAGE = 50  # jobs a page of the job list
QUERY_ROWS = 1000  # rows the query page shows at most
PICKS = 50  # earlier results a form offers as inputs
PREVIEWS = 12  # results a job page previews (each result's entity page has its own)
PREVIEW_FETCH_BYTES = 16 * 2**20  # a result of an object store larger than this has no preview
# the paths of the web pages: the session cookie signs a caller in on them (and on GETs)
WEB_PREFIXES = (
    "/login",
    "/logout",
    "/new/",
    "/jobs",
    "/static/",
    "/entities/",
    "/query",
    "/tokens",
)
LINEAGE_DEPTH = 10  # hops an entity page shows by default (the page may ask up to 100)


def is_web_path(path: str) -> bool:
    return path == "/" or path.startswith(WEB_PREFIXES)


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["when"] = lambda value: format_datetime(value) if value else ""
    env.globals["FINAL"] = sorted(FINAL)
    env.globals["page_link"] = page_link
    env.globals["run_again"] = run_again
    return env


def install(
    app: bottle.Bottle,
    jobs: JobService,
    tap: TapService,
    provenance: ProvenanceService,
    accounts: Accounts,
    identities: Identities,
    sessions: Sessions,
    settings: Settings,
) -> None:
    route = router(app)
    env = environment()

    def form_cookie() -> str:
        """What this browser's CSRF tokens are made from: its session, else (a visitor
        where anonymous access is on) a random cookie of its own, set here."""
        found = bottle.request.get_cookie(COOKIE) or bottle.request.get_cookie(VISITOR)
        if found:
            return str(found)
        made = secrets.token_urlsafe(24)
        bottle.response.set_cookie(
            VISITOR, made, path="/", httponly=True, samesite="lax", secure=_tls()
        )
        return made

    def render(template: str, status: int = 200, **values: Any) -> str:
        who = caller()
        csrf = sessions.csrf(form_cookie())
        bottle.response.status = status
        bottle.response.content_type = HTML
        return env.get_template(template).render(
            user=who.name, csrf=csrf, base=base_url(), **values
        )

    def signed_in() -> Caller:
        """The caller; a visitor where anonymous access is off goes to the sign-in page."""
        who = caller()
        if who.name is None and not settings.anonymous:
            target = bottle.request.fullpath
            raise bottle.HTTPResponse(
                status=303, headers={"Location": f"/login?next={quote(target)}"}
            )
        return who

    def check_csrf() -> None:
        cookie = bottle.request.get_cookie(COOKIE) or bottle.request.get_cookie(VISITOR)
        if not sessions.csrf_ok(cookie, bottle.request.forms.get("csrf")):
            raise bottle.HTTPResponse(
                "403 Forbidden: the form is out of date (no valid CSRF token): reload the page",
                status=403,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )

    @route("/static/<name:path>")
    def static(name: str) -> bottle.HTTPResponse:
        response: bottle.HTTPResponse = bottle.static_file(name, root=str(STATIC))
        return response

    @route("/login")
    def login_page() -> str:
        return render("login.html", next=_next(), error=None, name="")

    @route("/login", method="POST")
    def login() -> str:
        check_csrf()  # no signing a browser in as someone else (login CSRF)
        form = bottle.request.forms
        name, token = (form.get("name") or "").strip(), (form.get("token") or "").strip()
        try:
            who = identities.caller(f"Bearer {token}") if token else None
            if who is None or who.name != name:
                raise Unauthorized("wrong user name or token")
        except Unauthorized:
            return render(
                "login.html", 401, next=_next(), error="wrong user name or token", name=name
            )
        redirect = bottle.HTTPResponse(status=303, headers={"Location": _next()})
        redirect.set_cookie(
            COOKIE,
            sessions.issue(name),
            path="/",
            httponly=True,
            samesite="lax",
            secure=_tls(),
            max_age=LIFETIME,
        )
        raise redirect

    @route("/logout", method="POST")
    def logout() -> None:
        check_csrf()
        redirect = bottle.HTTPResponse(status=303, headers={"Location": "/"})
        redirect.delete_cookie(COOKIE, path="/")
        raise redirect

    @route("/")
    def home() -> str:
        who = signed_in()
        definitions = jobs.jobdefs(who)
        groups: dict[str, list[Any]] = {}
        for jobdef in definitions:
            groups.setdefault(jobdef.type or "other", []).append(jobdef)
        recent = jobs.page(who, None, None, RECENT)
        return render("home.html", groups=sorted(groups.items()), recent=recent)

    def form_page(
        who: Caller,
        jobdef: JobDefinition,
        values: dict[str, str],
        errors: dict[str, str] | None = None,
    ) -> str:
        """A definition's form; its inputs may also be picked from the user's results."""
        picks = jobs.recent_results(who, PICKS) if jobdef.used else []
        choices = tuple(
            (e.id, f"{e.file_name} ({e.content_type}) of {jobdef_name} job {e.job_id}")
            for e, jobdef_name in picks
        )
        form = form_of(jobdef, choices)
        status = 400 if errors else 200
        return render("form.html", status, form=form, errors=errors or {}, values=values)

    @route("/new/<name>")
    def new_job(name: str) -> str:
        """The form, filled with the defaults, or with the values given in the query
        ("run again with the same parameters")."""
        who = signed_in()
        values = dict(bottle.request.query.decode().allitems())
        return form_page(who, jobs.jobdef(who, name), values)

    @route("/new/<name>", method="POST")
    def submit(name: str) -> str:
        who = signed_in()
        check_csrf()
        jobdef = jobs.jobdef(who, name)
        fields, uploads = form_fields()
        fields = [(k, v) for k, v in fields if k != "csrf" and (v != "" or k == "PHASE")]
        uploads = [u for u in uploads if u.file_name]
        fields = _booleans(jobdef, fields)
        try:
            job_id = jobs.create(who, name, [*fields, ("PHASE", "RUN")], uploads, base_url())
        except ParameterError as exc:
            return form_page(who, jobdef, dict(fields), {exc.name: exc.reason})
        raise see_other(f"/jobs/{name}/{job_id}")

    @route("/jobs/<name>/<job_id>")
    def job_page(name: str, job_id: str) -> str:
        who = signed_in()
        view = jobs.get(who, name, job_id)
        agents = _flag(bottle.request.query.get("agents"))
        starts = [job_qname(job_id), *(entity_qname(r.id) for r in view.results)]
        found = recorded(who, _walk(starts, None, "BACK", agents))
        drawn = lineage(found) if found else None
        return render(
            "job.html",
            view=view,
            jobdef=jobs.jobdef(who, name),
            final=view.job.phase in FINAL,
            lineage=drawn,
            agents=agents,
            previews={r.id: shown(r) for r in view.results[:PREVIEWS]},
            elapsed=_elapsed(view.job),
        )

    @route("/jobs/<job_id:re:[0-9a-f]{16}>")
    def job_by_id(job_id: str) -> None:
        """A job's page by its id alone (where a lineage table names a job)."""
        job = jobs.job_by_id(signed_in(), job_id)
        raise see_other(f"/jobs/{job.jobdef}/{job_id}")

    @route("/jobs/<name>/<job_id>", method="POST")
    def job_action(name: str, job_id: str) -> None:
        """The job page's buttons: run, abort, delete, a new destruction time."""
        who = signed_in()
        check_csrf()
        form = bottle.request.forms
        action = form.get("action") or ""
        if action in ("RUN", "ABORT"):
            jobs.change_phase(who, name, job_id, action)
        elif action == "DELETE":
            jobs.delete(who, name, job_id)
            raise see_other("/jobs")
        elif action == "DESTRUCTION":
            jobs.set_destruction(who, name, job_id, form.get("destruction"))
        else:
            raise ParameterError("action", f"{action!r} is not RUN, ABORT, DELETE or DESTRUCTION")
        raise see_other(f"/jobs/{name}/{job_id}")

    @route("/jobs")
    def job_list() -> str:
        who = signed_in()
        query = bottle.request.query
        wanted, phase = query.get("jobdef") or "", query.get("phase") or ""
        oldest = query.get("order") == "oldest"
        found = jobs.page(who, wanted or None, phase or None, PAGE + 1, query.get("before"), oldest)
        more = found[PAGE - 1].id if len(found) > PAGE else None
        return render(
            "jobs.html",
            found=found[:PAGE],
            definitions=[d.name for d in jobs.jobdefs(who)],
            wanted=wanted,
            phase=phase,
            oldest=oldest,
            more=more,
        )

    def run_query(who: Caller, adql: str, maxrec: int) -> dict[str, Any]:
        """A query's table for a page, or the error the service gave."""
        base = tap.base(base_url())
        fields = [("LANG", "ADQL"), ("QUERY", adql), ("MAXREC", str(maxrec))]
        try:
            request = tap_request(fields, settings)
            columns, rows, overflow = tap.rows(who, request, {}, base, settings.tap_sync_timeout)
        except TapError as exc:
            return {"error": str(exc), "columns": [], "rows": [], "overflow": False}
        prefix = namespace_uri(base)
        shown = [[_cell(v, prefix) for v in row] for row in rows]
        return {"error": None, "columns": columns, "rows": shown, "overflow": overflow}

    def a_user() -> str:
        """The signed-in user's name (a visitor goes to the sign-in page: tokens are a
        user's)."""
        who = caller()
        if who.name is None:
            raise bottle.HTTPResponse(status=303, headers={"Location": "/login?next=/tokens"})
        return who.name

    def tokens_page(name: str, made: str | None = None, status: int = 200) -> str:
        return render("tokens.html", status, tokens=accounts.tokens(name), made=made)

    @route("/tokens")
    def tokens() -> str:
        return tokens_page(a_user())

    @route("/tokens", method="POST")
    def new_token() -> str:
        name = a_user()
        check_csrf()
        return tokens_page(name, made=accounts.issue_token(name), status=201)

    @route("/tokens/revoke", method="POST")
    def revoke_token() -> None:
        name = a_user()
        check_csrf()
        key = bottle.request.forms.get("key") or ""
        if not key.isalnum() or accounts.revoke(name, key) == 0:
            raise NotFound(f"you have no token {key!r}")
        raise see_other("/tokens")

    @route("/query")
    def query_page() -> str:
        who = signed_in()
        adql = bottle.request.query.decode().get("QUERY", "").strip()
        newest = tap.newest(who, tap.base(base_url()))
        found = run_query(who, adql, QUERY_ROWS) if adql else None
        return render("query.html", adql=adql, found=found, examples=examples(*newest))

    def recorded(who: Caller, walk: Request) -> Document | None:
        """The lineage walked, None where nothing is recorded yet (a job that has not
        ended, a file no job has used)."""
        try:
            return provenance.lineage(who, walk, base_url())
        except NotFound:
            return None

    def shown(entity: EntityRecord) -> Preview | None:
        with readable(jobs.storage, entity.path, PREVIEW_FETCH_BYTES) as path:
            return preview(path, entity.content_type, entity.file_name) if path else None

    @route("/entities/<entity_id>/image.png")
    def fits_image(entity_id: str) -> bytes:
        """The image preview of a FITS file (its first image HDU)."""
        entity = jobs.entity(signed_in(), entity_id)
        with readable(jobs.storage, entity.path, PREVIEW_FETCH_BYTES) as path:
            png = fits_png(path) if path else None
        if png is None:
            raise NotFound(f"{entity.file_name} has no image to preview")
        bottle.response.content_type = "image/png"
        bottle.response.set_header("Cache-Control", "private, max-age=3600")
        return png

    @route("/entities/<entity_id>")
    def entity_page(entity_id: str) -> str:
        who = signed_in()
        entity = jobs.entity(who, entity_id)
        maker = None
        if entity.job_id and entity.origin == "result":
            with contextlib.suppress(OpusError):
                maker = jobs.get(who, jobs.job_by_id(who, entity.job_id).jobdef, entity.job_id)
        depth = _depth(bottle.request.query.get("depth"))
        agents = _flag(bottle.request.query.get("agents"))
        start = [entity_qname(entity.id)]
        up = recorded(who, _walk(start, depth, "BACK", agents))
        down = recorded(who, _walk(start, depth, "FORTH", agents))
        drawn = lineage(merged(up, down)) if up and down else None
        return render(
            "entity.html",
            entity=entity,
            maker=maker,
            lineage=drawn,
            made_from=steps(up) if up else [],
            made_into=steps(down) if down else [],
            depth=depth,
            agents=agents,
            preview=shown(entity),
        )


def run_again(jobdef: str, parameters: list[Any]) -> str:
    """The form of a definition filled with a job's parameters ("run again")."""
    return f"/new/{quote(jobdef)}?" + urlencode([(p.name, p.value) for p in parameters])


def _elapsed(job: JobRecord) -> int | None:
    """Whole seconds a running job has run (None when it is not running)."""
    if job.phase != "EXECUTING" or job.start_time is None:
        return None
    return max(0, int((utcnow() - job.start_time).total_seconds()))


def _walk(ids: list[str], depth: int | None, direction: Direction, agents: bool) -> Request:
    """A ProvSAP walk for a page: the IVOA model (parameters in the tooltips)."""
    return Request(ids, depth, direction, "IVOA", agents, "PROV-SVG")


def _flag(text: str | None) -> bool:
    return (text or "").lower() in ("1", "true", "yes", "on")


def _depth(text: str | None) -> int:
    if text and text.isdigit():
        return max(1, min(int(text), 100))
    return LINEAGE_DEPTH


@dataclass(frozen=True)
class Cell:
    """A value of a result table; `href` where it names a page of this server."""

    text: str
    href: str | None = None


def _cell(value: Any, prefix: str) -> Cell:
    text = "" if value is None else str(value)
    if text.startswith(prefix + "ent_"):
        return Cell(text, "/entities/" + text.removeprefix(prefix + "ent_"))
    if text.startswith(prefix + "job_"):
        return Cell(text, "/jobs/" + text.removeprefix(prefix + "job_"))
    if text.startswith(prefix):
        return Cell(text, text)  # /prov/... resolves: a job's page, a record's document
    return Cell(text)


def _tls() -> bool:
    return bool(bottle.request.urlparts.scheme == "https")


def _next() -> str:
    """Where to go after signing in: a path of this server only."""
    target = bottle.request.params.get("next") or "/"
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _booleans(jobdef: JobDefinition, fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A checkbox sends nothing when unticked: each boolean parameter (the form shows them
    all) is true when sent, else false."""
    flags = {p.name for p in jobdef.parameters if p.kind == "boolean"}
    sent = {k for k, _ in fields}
    return [(k, v) for k, v in fields if k not in flags] + [
        (name, "true" if name in sent else "false") for name in sorted(flags)
    ]


def web_caller(
    identities: Identities, sessions: Sessions
) -> Callable[[str, str, str | None], Caller | None]:
    """The caller a session cookie signs in, for `opus.http.identify`: on web pages and on
    GETs (downloads and previews of results), never on other POSTs (no CSRF through the
    REST API)."""

    def find(path: str, method: str, cookie: str | None) -> Caller | None:
        if not cookie or not (is_web_path(path) or method in ("GET", "HEAD")):
            return None
        user = sessions.user(cookie)
        if user is None:
            return None
        try:
            return identities.session(user)
        except OpusError:
            return None

    return find

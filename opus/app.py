"""Builds the bottle application: one service graph per process, routes mounted on it."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from typing import Any

import bottle
from sqlalchemy import text as sql

from opus import metrics, vosi
from opus.accounts import Accounts
from opus.auth import Identities
from opus.config import Settings
from opus.execution.dispatch import Dispatcher, make_dispatcher
from opus.execution.notify import Notifier, make_notifier
from opus.execution.runner import HEARTBEAT_INTERVAL
from opus.http import (
    XML,
    base_url,
    caller,
    errors_as_text,
    identify,
    plain_error_page,
    request_guard,
    router,
)
from opus.jobdefs.registry import Registry, load_registry
from opus.provsap import routes as provsap_routes
from opus.provsap.service import ProvenanceService
from opus.store.db import WEB_POOL, Database
from opus.tap import routes as tap_routes
from opus.tap.schema import BY_NAME
from opus.tap.service import TapService
from opus.uws import routes as uws_routes
from opus.uws.schedules import ScheduleService
from opus.uws.service import JobService
from opus.web import routes as web_routes
from opus.web.routes import is_web_path, web_caller
from opus.web.session import COOKIE, Sessions


@dataclass
class Services:
    settings: Settings
    db: Database
    registry: Registry
    dispatcher: Dispatcher
    jobs: JobService
    identities: Identities


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url, pool_size=WEB_POOL)
    registry = load_registry(settings.jobdef_dirs)
    dispatcher = make_dispatcher(settings, db)
    notifier: Notifier = make_notifier(settings)
    jobs = JobService(settings, db, registry, dispatcher, notifier)
    return Services(settings, db, registry, dispatcher, jobs, Identities(settings, db))


def create_app(settings: Settings) -> bottle.Bottle:
    services = build_services(settings)
    app = bottle.Bottle(catchall=True)
    app.install(errors_as_text)
    _count_requests(app)  # first: a request the guard refuses counts too
    app.add_hook("before_request", request_guard(settings.max_upload_bytes))
    sessions = Sessions(settings)
    app.install(
        identify(
            services.identities,
            OPEN_PATHS,
            web_caller(services.identities, sessions),
            is_web_path,
            COOKIE,
        )
    )
    app.default_error_handler = plain_error_page
    app.config["opus.services"] = services
    uws_routes.install(app, services.jobs, services.settings)
    uws_routes.install_schedules(app, ScheduleService(services.jobs, services.identities))
    provenance = ProvenanceService(services.db, settings.public_url)
    provsap_routes.install(app, provenance, services.jobs.job)
    tap = TapService(settings, services.db)
    tap_routes.install(app, tap, services.jobs, settings)
    web_routes.install(
        app,
        services.jobs,
        tap,
        provenance,
        Accounts(services.db),
        services.identities,
        sessions,
        settings,
    )
    _install_service_routes(app, services)
    gc.freeze()  # what exists now lives as long as the process: keep it out of GC scans
    return app


log = logging.getLogger(__name__)
REQUEST_STARTED = "opus.started"  # in a request's environ: perf_counter() when it came


def _count_requests(app: bottle.Bottle) -> None:
    """Every request counted and timed by the rule of the route that took it (hooks, not a
    plugin: the requests no route takes, 404 and 405, count too)."""

    def started() -> None:
        bottle.request.environ[REQUEST_STARTED] = time.perf_counter()
        metrics.request_started()

    def ended() -> None:
        environ = bottle.request.environ
        began = environ.pop(REQUEST_STARTED, None)
        if began is None:
            return
        route = environ.get("bottle.route")
        try:
            metrics.request_ended(
                route.rule if route is not None else None,
                bottle.request.method,
                bottle.response.status_code,
                time.perf_counter() - began,
            )
        except OSError as exc:  # the metrics folder is full or gone: answer all the same
            log.warning("metrics: request not counted: %s", exc)

    app.add_hook("before_request", started)
    app.add_hook("after_request", ended)


# VOSI answers anyone: clients learn there whether they need credentials (IVOA SSO).
OPEN_PATHS = frozenset(
    {"/availability", "/capabilities", "/provsap/availability", "/provsap/capabilities"}
    | {"/tap/availability", "/tap/capabilities", "/tap/tables"}
    | {f"/tap/tables/{name}" for name in BY_NAME}
)


def _install_service_routes(app: bottle.Bottle, services: Services) -> None:
    registry = services.registry
    route = router(app)
    state = metrics.StoreState(
        services.db,
        registry,
        services.dispatcher,
        celery=bool(services.settings.broker_url),
        silent_after=3 * HEARTBEAT_INTERVAL,  # silent this long, a runner is gone (the sweeps)
    )
    exporter = metrics.Exporter(state)

    @route("/metrics")
    def metrics_text() -> bytes:
        body = exporter.text(caller())
        bottle.response.content_type = metrics.CONTENT_TYPE
        return body

    @route("/availability")
    @route("/provsap/availability")
    @route("/tap/availability")
    def availability() -> bytes:
        notes = [f"{len(registry.definitions)} job definition(s) served"]
        try:
            with services.db.read() as conn:
                conn.execute(sql("SELECT 1"))
            available = True
        except Exception as exc:
            available = False
            notes.append(f"database unreachable: {type(exc).__name__}")
        notes.append(services.dispatcher.status()[1])
        notes += [f"job definition left out: {p.path.name}: {p.field}" for p in registry.problems]
        bottle.response.content_type = XML
        return vosi.availability(available, notes)

    @route("/capabilities")
    @route("/provsap/capabilities")
    def capabilities() -> bytes:
        bottle.response.content_type = XML
        names = [d.name for d in services.jobs.jobdefs(caller())]
        return vosi.capabilities(base_url(), names, services.settings.anonymous)

    @route("/jdl")
    def jdl_list() -> dict[str, Any]:
        base = base_url()
        return {
            "jobdefs": [
                {
                    "name": d.name,
                    "version": d.version,
                    "type": d.type,
                    "description": d.description,
                    "url": f"{base}/jdl/{d.name}",
                    "jobs": f"{base}/rest/{d.name}",
                }
                for d in services.jobs.jobdefs(caller())
            ],
            "invalid": [
                {"file": p.path.name, "field": p.field, "reason": p.reason}
                for p in registry.problems
            ],
        }

    @route("/jdl/<name>")
    def jdl(name: str) -> bottle.HTTPResponse:
        jobdef = services.jobs.jobdef(caller(), name)
        response: bottle.HTTPResponse = bottle.static_file(
            jobdef.source.rsplit("/", 1)[-1],
            root=jobdef.source.rsplit("/", 1)[0],
            mimetype="application/x-votable+xml",
        )
        return response

    @route("/jdl/<name>/json")
    def jdl_json(name: str) -> dict[str, Any]:
        return services.jobs.jobdef(caller(), name).model_dump(exclude={"source"})

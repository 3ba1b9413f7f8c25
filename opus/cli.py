"""The `opus` command: serve, submit, jobs."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opus.config import Settings, join_metrics_dir, share_metrics_dir
from opus.extras import MissingExtra, check
from opus.identity_cli import add_commands, open_database
from opus.phases import FINAL, Phase
from opus.prov_cli import add_commands as add_prov_commands
from opus.schedule_cli import add_commands as add_schedule_commands

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
XLINK = "{http://www.w3.org/1999/xlink}"


def serve(args: argparse.Namespace) -> int:
    # Nothing here may import bottle or a database driver: bottle's request and response
    # are thread-locals made at import time, and psycopg picks how to wait on its socket
    # at import time; both must happen in the workers, after gevent's patching.
    from gunicorn.app.base import BaseApplication

    from opus.jobdefs.registry import load_registry

    settings = Settings(host=args.host, port=args.port)
    try:
        check(settings)
    except MissingExtra as exc:
        print(f"opus: {exc}", file=sys.stderr)
        return 2
    if not settings.anonymous:
        print(f"opus: {args.host} is not loopback: requests need credentials", file=sys.stderr)
    try:  # creates an empty database; refuses an outdated one, saying why (exit 2)
        subprocess.run([sys.executable, "-m", "opus.store"], check=True)
    except subprocess.CalledProcessError:
        return 2
    registry = load_registry(settings.jobdef_dirs)
    for problem in registry.problems:
        print(f"opus: job definition not served: {problem}", file=sys.stderr)
    print(f"opus: serving {', '.join(registry.names()) or 'no job definitions'}", file=sys.stderr)

    share_metrics_dir(settings.metrics_dir)  # where this server's processes count (metrics.py)
    master = os.getpid()
    # beside the web server: the embedded executor, or (jobs on Celery workers) the sweeps
    if settings.broker_url:
        print("opus: jobs go to Celery workers (opus worker) through the broker", file=sys.stderr)
    daemon = "sweeper" if settings.broker_url else "executor"
    executor = subprocess.Popen([sys.executable, "-m", "opus.daemons", daemon])

    def worker_exited(_server: Any, worker: Any) -> None:  # its live gauges go with it
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(worker.pid, str(settings.metrics_dir))  # type: ignore[no-untyped-call]

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", [f"{args.host}:{args.port}"])
            self.cfg.set("workers", args.workers)
            self.cfg.set("worker_class", "gevent")
            self.cfg.set("worker_connections", 2000)
            self.cfg.set("keepalive", 30)
            self.cfg.set("graceful_timeout", 5)
            self.cfg.set("proc_name", "opus")
            self.cfg.set("control_socket_disable", True)
            self.cfg.set("child_exit", worker_exited)

        def load(self) -> Any:
            from opus.app import create_app

            return create_app(settings)

    try:
        Application().run()
    finally:
        # gunicorn's workers leave this function too (they are forks of the master)
        if os.getpid() == master:
            executor.terminate()
            try:
                executor.wait(30)
            except subprocess.TimeoutExpired:
                executor.kill()
    return 0


def _celery_app() -> Any:
    settings = Settings()
    if not settings.broker_url:
        print("opus: set OPUS_BROKER_URL (redis://...) to run Celery workers", file=sys.stderr)
        return None
    db = open_database()
    if db is None:
        return None
    from opus.execution.celery_app import make_celery
    from opus.store.migrate import SchemaError

    try:
        db.create_schema()
    except SchemaError as exc:
        print(f"opus: {exc}", file=sys.stderr)
        return None
    finally:
        db.engine.dispose()
    return make_celery(settings)


def worker(args: argparse.Namespace) -> int:
    settings = Settings()
    # before prometheus_client is imported: the folder this host's job processes count in
    join_metrics_dir(settings.metrics_dir, make=bool(settings.metrics_port))
    app = _celery_app()
    if app is None:
        return 2
    argv = [
        "worker",
        f"--concurrency={args.concurrency}",
        "--loglevel=WARNING",
        "-Q",
        "opus",
        "-n",
        f"opus-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.concurrency == 1:
        argv.append("--pool=solo")  # the job runs in this process: no pool to feed
    from celery.signals import worker_ready

    from opus import daemons

    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _ready(**_kwargs: Any) -> None:  # in the main process, once its pool is forked
        daemons.start_in_worker(settings)  # every worker competes to run the sweeps
        if settings.metrics_port:
            from opus import metrics

            metrics.serve_host(settings.host, settings.metrics_port)

    app.worker_main(argv)
    return 0


def beat(args: argparse.Namespace) -> int:
    """The sweeps alone, in the foreground: optional, since every OPUS process competes
    to run them; kept for deployments that want a process of their own for them."""
    if _celery_app() is None:
        return 2
    from opus import daemons

    logging.basicConfig(level=logging.INFO, format="%(asctime)s beat %(message)s")
    daemons.run_sweeper(Settings(), "beat")
    return 0


def _session(args: argparse.Namespace) -> Any:
    """An HTTP session sending the credentials given: --user and --token as HTTP Basic,
    a token alone (--token or OPUS_TOKEN) as a bearer token."""
    import requests

    session = requests.Session()
    token = args.token or Settings().token
    if args.user and token:
        session.auth = (args.user, token)
    elif token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


def _job_summary(xml_text: bytes) -> dict[str, Any]:
    root = ET.fromstring(xml_text)
    results = [(r.get("id"), r.get(f"{XLINK}href")) for r in root.iter(f"{UWS}result")]
    error = root.find(f"{UWS}errorSummary/{UWS}message")
    return {
        "id": root.findtext(f"{UWS}jobId"),
        "phase": root.findtext(f"{UWS}phase"),
        "results": results,
        "error": error.text if error is not None else None,
    }


def submit(args: argparse.Namespace) -> int:
    session = _session(args)
    data: list[tuple[str, str]] = [("PHASE", "RUN")]
    files: list[tuple[str, Any]] = []
    for item in args.parameters:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"opus submit: {item!r} is not key=value", file=sys.stderr)
            return 2
        if value.startswith("@"):
            path = Path(value[1:])
            files.append((key, (path.name, path.open("rb"))))
        else:
            data.append((key, value))
    url = f"{args.server.rstrip('/')}/rest/{args.jobdef}"
    response = session.post(url, data=data, files=files or None, allow_redirects=False)
    if response.status_code != 303:
        print(f"opus submit: {response.status_code} {response.text.strip()}", file=sys.stderr)
        return 1
    job_url = response.headers["Location"]
    print(job_url)
    if not args.wait:
        return 0
    while True:
        answer = session.get(job_url, params={"WAIT": "-1"}, timeout=700)
        answer.raise_for_status()
        summary = _job_summary(answer.content)
        if summary["phase"] in FINAL:
            break
    print(summary["phase"])
    for result_id, href in summary["results"]:
        print(f"{result_id}\t{href}")
    if summary["error"]:
        print(summary["error"], file=sys.stderr)
    return 0 if summary["phase"] == Phase.COMPLETED else 1


def jobs(args: argparse.Namespace) -> int:
    session = _session(args)
    server = args.server.rstrip("/")
    names = [args.jobdef]
    if not args.jobdef:
        listing = session.get(f"{server}/jdl")
        if listing.status_code != 200:  # e.g. 401: no credentials, or wrong ones
            print(f"opus jobs: {listing.status_code} {listing.text.strip()}", file=sys.stderr)
            return 1
        names = [d["name"] for d in listing.json()["jobdefs"]]
    params: dict[str, Any] = {"LAST": str(args.last)}
    if args.phase:
        params["PHASE"] = args.phase
    for name in names:
        response = session.get(f"{server}/rest/{name}", params=params)
        if response.status_code != 200:
            print(f"opus jobs: {response.status_code} {response.text.strip()}", file=sys.stderr)
            return 1
        for ref in ET.fromstring(response.content).iter(f"{UWS}jobref"):
            print(
                f"{name}\t{ref.get('id')}\t{ref.findtext(f'{UWS}phase')}"
                f"\t{ref.findtext(f'{UWS}creationTime')}"
            )
    return 0


def prov_export(args: argparse.Namespace) -> int:
    """Write provenance files straight from the store (run on the server's machine)."""
    from opus.ids import entity_qname, is_id, job_qname
    from opus.store.db import Database
    from opus.timeutil import parse_datetime
    from provenance.export import activity_ids, export

    settings = Settings()
    base, namespaces = _export_base(args.base_url or settings.public_url)
    db = Database(settings.db_url)
    items: list[tuple[str, str]] = [("activity", job_qname(j)) for j in args.job]
    items += [("entity", entity_qname(e) if is_id(e) else e) for e in args.entity]
    since = parse_datetime(args.since) if args.since else None
    allowed = None
    if args.user:  # what that user may see; without --user, everything (as an admin)
        from opus.auth import Identities, visible_nodes
        from opus.errors import Unauthorized

        try:
            allowed = visible_nodes(Identities(settings, db).load(args.user))
        except Unauthorized as exc:
            print(f"opus prov export: {exc.message}", file=sys.stderr)
            return 2
    everything = (("activity", a) for a in activity_ids(db.read, since, allowed))
    count = export(
        db.read,
        items or everything,
        Path(args.out),
        args.format,
        namespaces,
        args.model,
        allowed,
        base,
    )
    print(f"opus prov export: {count} file(s) and index.csv in {args.out}")
    return 0


def _export_base(url: str) -> tuple[str | None, dict[str, str]]:
    """The base URL exported files carry (--base-url, else OPUS_PUBLIC_URL) and their
    namespaces. With neither there is no request to take it from: the ids keep the
    namespace urn:opus: and the locations stay relative, as said on stderr."""
    from opus.ids import NAMESPACES, namespace_uri, public_base

    if not url.strip():
        print(
            "opus prov export: no public URL (OPUS_PUBLIC_URL or --base-url): ids keep "
            f"the namespace {NAMESPACES['opus']} and locations stay relative to the server",
            file=sys.stderr,
        )
        return None, dict(NAMESPACES)
    base = public_base(url)
    return base, {"opus": namespace_uri(base)}


def db_upgrade(args: argparse.Namespace) -> int:
    """Bring the database's schema to the newest revision (back it up first)."""
    from opus.store import migrate

    db = open_database()
    if db is None:
        return 2
    try:
        found, now = migrate.upgrade(db)
    except migrate.SchemaError as exc:
        print(f"opus db upgrade: {exc}", file=sys.stderr)
        return 2
    finally:
        db.engine.dispose()
    if found == now:
        print(f"opus db upgrade: the schema is at {now}, the newest revision: nothing to do")
    elif found is None:
        print(f"opus db upgrade: the database was empty: created at {now}")
    else:
        print(f"opus db upgrade: upgraded from {found} to {now}")
    return 0


def db_current(args: argparse.Namespace) -> int:
    """Print the database's revision of the schema (nothing for an empty database)."""
    from opus.store import migrate

    db = open_database()
    if db is None:
        return 2
    try:
        with db.read() as conn:
            found = migrate.current(conn)
    finally:
        db.engine.dispose()
    newest = migrate.head()
    if found is None:
        print(
            f"opus db current: the database is empty (the newest revision is {newest})",
            file=sys.stderr,
        )
    else:
        print(found)
        if found != newest:
            print(
                f"opus db current: the newest revision is {newest}: run `opus db upgrade`",
                file=sys.stderr,
            )
    return 0


def demo(args: argparse.Namespace) -> int:
    from opus.demo import run

    return run(args.url, Path(args.out), _session(args))


def parser() -> argparse.ArgumentParser:
    defaults = Settings()
    server = defaults.server
    top = argparse.ArgumentParser(prog="opus", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the web server and the embedded executor")
    p.add_argument("--host", default=defaults.host, help="anonymous access is off but on loopback")
    p.add_argument("--port", type=int, default=defaults.port)
    p.add_argument("--workers", type=int, default=2, help="web server processes")
    p.set_defaults(func=serve)

    p = commands.add_parser("worker", help="run a Celery worker (OPUS_BROKER_URL set)")
    p.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    p.set_defaults(func=worker)

    p = commands.add_parser(
        "beat",
        help="run the sweeps in a process of their own (optional: every OPUS process "
        "competes to run them)",
    )
    p.set_defaults(func=beat)

    p = commands.add_parser("submit", help="create and run a job")
    p.add_argument("jobdef")
    p.add_argument("parameters", nargs="*", help="key=value, or key=@file to upload a file")
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.add_argument("--server", default=server)
    _credentials(p)
    p.set_defaults(func=submit)

    prov = commands.add_parser("prov", help="provenance").add_subparsers(
        dest="prov_command", required=True
    )
    p = prov.add_parser("export", help="write provenance files and an index")
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument(
        "--format",
        default="PROV-JSON",
        choices=["PROV-JSON", "PROV-N", "PROV-XML", "PROV-VOTABLE", "PROV-SVG"],
    )
    p.add_argument("--model", default="IVOA", choices=["IVOA", "W3C"])
    p.add_argument("--job", action="append", default=[], help="a job id (repeatable)")
    p.add_argument(
        "--entity",
        action="append",
        default=[],
        help="an entity id, with its whole lineage (repeatable)",
    )
    p.add_argument("--since", help="every activity ended since this ISO 8601 time")
    p.add_argument("--user", help="only what this user may see (default: everything)")
    p.add_argument(
        "--base-url",
        default="",
        help="the server's public base URL, for the namespace and locations "
        "(default: OPUS_PUBLIC_URL)",
    )
    p.set_defaults(func=prov_export)
    add_prov_commands(prov)

    database = commands.add_parser("db", help="the database's schema").add_subparsers(
        dest="db_command", required=True
    )
    p = database.add_parser("upgrade", help="bring the schema to the newest revision")
    p.set_defaults(func=db_upgrade)
    p = database.add_parser("current", help="print the schema's revision")
    p.set_defaults(func=db_current)

    p = commands.add_parser("jobs", help="list jobs, newest first")
    p.add_argument("jobdef", nargs="?")
    p.add_argument("--phase", action="append")
    p.add_argument("--last", type=int, default=20)
    p.add_argument("--server", default=server)
    _credentials(p)
    p.set_defaults(func=jobs)

    p = commands.add_parser(
        "demo", help="run the science definitions on the real data, with their provenance"
    )
    p.add_argument("--url", help="a running server (default: start one for the demo)")
    p.add_argument("--out", default="opus-demo", help="folder the results are written to")
    _credentials(p)
    p.set_defaults(func=demo)

    add_commands(commands)
    add_schedule_commands(commands)
    return top


def _credentials(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", help="send --token as HTTP Basic user:token")
    p.add_argument("--token", help="an API token (default: OPUS_TOKEN)")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Alembic logs every step at INFO (plugins loaded, a guess about transactional DDL that
    # does not apply: revisions run in opus.store.migrate's transaction); `opus db` says
    # what changed.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    found = parser()
    # `opus schedule add DEF --every 5m key=value ...`: values may follow the options
    args, extra = found.parse_known_args(argv)
    if extra and isinstance(getattr(args, "values", None), list):
        if any("=" not in item or item.startswith("-") for item in extra):
            found.error(f"unrecognized arguments: {' '.join(extra)}")
        args.values += extra
    elif extra:
        found.error(f"unrecognized arguments: {' '.join(extra)}")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

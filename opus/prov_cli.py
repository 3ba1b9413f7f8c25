"""`opus prov invalidate` and `opus prov rerun`: an entity found wrong, and the jobs made
from it run again, on the server's machine, straight in its database (the operator acts
as an administrator; the REST API has POST /prov/invalidate for remote administrators).
Jobs are created as a request would create them (`JobService.create`) and dispatched to
the server's executor or workers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from opus.config import Settings
from opus.identity_cli import on_database, operator

if TYPE_CHECKING:
    from opus.store.db import Database
    from opus.uws.rerun import Plan


def _command(
    name: str, action: Callable[[Settings, Database, argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    return on_database(f"prov {name}", lambda db, args: action(Settings(), db, args))


def invalidate(settings: Settings, db: Database, args: argparse.Namespace) -> int:
    from opus.auth import Identities
    from opus.errors import Forbidden
    from opus.provsap.invalidation import InvalidationService

    who = operator(settings)
    if args.user:
        who = Identities(settings, db).load(args.user)
        if not who.admin:
            raise Forbidden(f"{args.user} is not an administrator")
    service = InvalidationService(db, settings.public_url)
    base = service.base(settings.server_url)
    report = service.invalidate(who, args.entity, args.reason, base)
    print(json.dumps(report.as_json(base), indent=1))
    jobs = report.jobs
    print(
        f"opus prov invalidate: {report.entity} invalidated; downstream: "
        f"{len(report.entities)} entities, {len(jobs)} jobs"
        + (f" (run them again: opus prov rerun --downstream {report.entity})" if jobs else ""),
        file=sys.stderr,
    )
    return 0


def rerun(settings: Settings, db: Database, args: argparse.Namespace) -> int:
    from opus.auth import Identities
    from opus.daemons import job_service
    from opus.phases import Phase
    from opus.uws.rerun import RerunService

    service = RerunService(job_service(settings, db), Identities(settings, db))
    plan = service.plan(args.downstream, args.replacement)
    _print_plan(plan)
    if args.dry_run or not plan.steps:
        return 0
    outcomes = service.run(plan, settings.server_url, lambda line: print(line, file=sys.stderr))
    print("old job\tnew job\tphase\tnote")
    for outcome in outcomes:
        print(f"{outcome.old}\t{outcome.new or '-'}\t{outcome.phase}\t{outcome.note}")
    return 0 if all(o.phase == Phase.COMPLETED for o in outcomes) else 1


def _print_plan(plan: Plan) -> None:
    """The jobs to run again, in order, each with the inputs that change (on stdout); what
    is left out and why (on stderr)."""
    state = "invalidated" if plan.invalidated else "not invalidated"
    instead = f", replaced by {plan.replacement}" if plan.replacement else ""
    print(f"# {plan.entity} ({state}{instead}): {len(plan.steps)} job(s) to run again")
    print("order\tjob\tjobdef\towner\tafter\tinputs replaced")
    for n, step in enumerate(plan.steps, start=1):
        job = step.job
        changes = "; ".join(f"{role}: {old} -> {new}" for role, old, new in plan.replaced(step))
        if step.regenerates:
            changes = "makes " + plan.entity + (f"; {changes}" if changes else "")
        after = ",".join(sorted(step.after)) or "-"
        print(f"{n}\t{job.id}\t{job.jobdef}\t{job.owner or '-'}\t{after}\t{changes or '-'}")
    if plan.note:
        print(f"opus prov rerun: {plan.note}", file=sys.stderr)
    for activity, why in plan.skipped:
        print(f"opus prov rerun: {activity} left out: {why}", file=sys.stderr)


def add_commands(prov: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`invalidate` and `rerun` under `opus prov`."""
    p = prov.add_parser(
        "invalidate", help="record that an entity is wrong; print what is downstream of it"
    )
    p.add_argument("entity", help="its id: opus:ent_<id>, its URI, or the bare id")
    p.add_argument("--reason", required=True, help="why it is wrong (recorded)")
    p.add_argument(
        "--user", help="the administrator recorded as who invalidated it (default: operator)"
    )
    p.set_defaults(func=_command("invalidate", invalidate))
    p = prov.add_parser(
        "rerun", help="run again, in dependency order, the jobs downstream of an entity"
    )
    p.add_argument("--downstream", required=True, metavar="ENTITY", help="the entity found wrong")
    p.add_argument(
        "--replacement",
        metavar="NEW_ENTITY",
        help="a stored entity taking its place (default: the job that made it runs again)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the jobs, create none")
    p.set_defaults(func=_command("rerun", rerun))

"""`opus schedule add|list|remove`: periodic jobs, managed on the server's machine (the
same rules as the REST API's /schedules; the operator acts as an administrator)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from opus.config import Settings
from opus.identity_cli import on_database, operator
from opus.timeutil import format_datetime

if TYPE_CHECKING:  # the database's modules are imported when a command runs
    from opus.store.db import Database
    from opus.store.schedules import ScheduleRecord


def _schedule(db: Database, args: argparse.Namespace) -> int:
    from opus.daemons import schedule_service

    settings = Settings()
    who = operator(settings)
    service = schedule_service(settings, db)
    if args.schedule_command == "add":
        fields = []
        for item in args.values:
            key, sep, value = item.partition("=")
            if not sep:
                print(f"opus schedule add: {item!r} is not key=value", file=sys.stderr)
                return 2
            fields.append((key, value))
        url = settings.server_url
        record = service.add(who, args.owner, args.jobdef, fields, url, args.every, args.cron)
        print(json.dumps(_summary(record)))
    elif args.schedule_command == "list":
        for record in service.all(who):
            print(json.dumps(_summary(record)))
    else:
        service.remove(who, args.id)
        print(f"schedule {args.id} removed")
    return 0


def _summary(record: ScheduleRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "jobdef": record.jobdef,
        "owner": record.owner,
        "every": record.every,
        "cron": record.cron,
        "parameters": dict(record.fields),
        "next_run": format_datetime(record.next_run),
        "last_job": record.last_job_id,
    }


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedule = commands.add_parser("schedule", help="periodic jobs").add_subparsers(
        dest="schedule_command", required=True
    )
    p = schedule.add_parser("add", help="run a job definition at each tick; prints the schedule")
    p.add_argument("jobdef")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="an interval: 30s, 5m, 1h, 1d")
    when.add_argument("--cron", help="a cron expression, UTC: '0 * * * *'")
    p.add_argument("--owner", help="the user the jobs run as (default: anonymous)")
    p.add_argument("values", nargs="*", metavar="key=value", help="the jobs' values")
    p.set_defaults(func=on_database("schedule", _schedule))
    p = schedule.add_parser("list", help="every schedule, a JSON line each")
    p.set_defaults(func=on_database("schedule", _schedule))
    p = schedule.add_parser("remove", help="remove a schedule (its jobs stay)")
    p.add_argument("id")
    p.set_defaults(func=on_database("schedule", _schedule))

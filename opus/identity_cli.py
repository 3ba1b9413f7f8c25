"""`opus user` and `opus group`: identities managed on the server's machine, straight in
its database (whoever can run these can read the database anyway)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from opus.config import Settings
from opus.errors import OpusError
from opus.extras import MissingExtra, check
from opus.timeutil import format_datetime

if TYPE_CHECKING:  # the database's modules are imported when a command runs
    from opus.accounts import Accounts
    from opus.auth import Caller
    from opus.store.db import Database


def open_database() -> Database | None:
    """The configured Database for a command on the server's machine, its folder made
    (None, said why, if its driver is not installed). The `opus` commands share it."""
    settings = Settings()
    try:
        check(settings)
    except MissingExtra as exc:
        print(f"opus: {exc}", file=sys.stderr)
        return None
    from opus.store.db import Database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Database(settings.db_url)


def operator(settings: Settings) -> Caller:
    """Who a command run on the server's machine acts as: an administrator (whoever can
    run it can read the database anyway), anonymous, as that server's visitors are."""
    from opus.auth import Caller

    return Caller(None, admin=True, anonymous_public=settings.anonymous)


def on_database(
    name: str, action: Callable[[Database, argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    """An `opus NAME` command run on the configured database, its schema current; a
    refusal (opus.errors) or an outdated schema said in one line, exit 2."""

    def command(args: argparse.Namespace) -> int:
        # imported here: `opus serve` must not import a database driver before gevent patches
        from opus.store.migrate import SchemaError, ensure_current

        db = open_database()
        if db is None:
            return 2
        try:
            ensure_current(db)
            return action(db, args)
        except OpusError as exc:
            print(f"opus {name}: {exc.message}", file=sys.stderr)
            return 2
        except SchemaError as exc:
            print(f"opus {name}: {exc}", file=sys.stderr)
            return 2
        finally:
            db.engine.dispose()

    return command


def _run(name: str, action: Callable[[Accounts, argparse.Namespace], None]) -> Callable[..., int]:
    def on_accounts(db: Database, args: argparse.Namespace) -> int:
        from opus.accounts import Accounts

        action(Accounts(db), args)
        return 0

    return on_database(name, on_accounts)


def _limits(args: argparse.Namespace) -> dict[str, object]:
    fields: dict[str, object] = {}
    if args.max_active is not None:
        fields["max_active_jobs"] = args.max_active
    if args.max_duration is not None:
        fields["max_execution_duration"] = args.max_duration
    if args.max_destruction_days is not None:
        fields["max_destruction_days"] = args.max_destruction_days
    return fields


def user_add(accounts: Accounts, args: argparse.Namespace) -> None:
    token = accounts.add_user(args.name, args.group, args.admin)
    if _limits(args):
        accounts.set_user(args.name, **_limits(args))
    print(f"user {args.name} added; its token (shown this once):", file=sys.stderr)
    print(token)


def user_token(accounts: Accounts, args: argparse.Namespace) -> None:
    token = accounts.issue_token(args.name)
    print(f"a new token of {args.name} (shown this once):", file=sys.stderr)
    print(token)


def user_revoke(accounts: Accounts, args: argparse.Namespace) -> None:
    count = accounts.revoke(args.name, args.prefix or "")
    print(f"{count} token(s) of {args.name} revoked")


def user_set(accounts: Accounts, args: argparse.Namespace) -> None:
    fields = _limits(args)
    if args.admin is not None:
        fields["admin"] = args.admin
    accounts.set_user(args.name, **fields)


def user_list(accounts: Accounts, args: argparse.Namespace) -> None:
    print("name\tadmin\tgroups\ttokens (key, created, last used)")
    for user in accounts.users():
        tokens = ", ".join(
            f"opus_{t.key} {format_datetime(t.created)} "
            f"{format_datetime(t.last_used) if t.last_used else 'never'}"
            for t in user.tokens
        )
        admin = "admin" if user.admin else "-"
        print(f"{user.name}\t{admin}\t{','.join(user.groups) or '-'}\t{tokens or '-'}")


def group_add(accounts: Accounts, args: argparse.Namespace) -> None:
    accounts.add_group(args.name, args.right)
    if _limits(args):
        accounts.set_group(args.name, **_limits(args))


def group_list(accounts: Accounts, args: argparse.Namespace) -> None:
    print("name\trights\tmembers")
    for group, members in accounts.groups():
        print(f"{group.name}\t{group.rights or '-'}\t{','.join(members) or '-'}")


def group_members(accounts: Accounts, args: argparse.Namespace) -> None:
    for name in accounts.members(args.name, args.add, args.remove):
        print(name)


def _limit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-active", type=int, help="jobs QUEUED or EXECUTING at once (0: any)")
    p.add_argument("--max-duration", type=int, help="longest execution duration, s")
    p.add_argument("--max-destruction-days", type=float, help="longest job lifetime, days")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = commands.add_parser("user", help="users and their API tokens").add_subparsers(
        dest="user_command", required=True
    )
    p = user.add_parser("add", help="add a user; prints its first token on the last line")
    p.add_argument("name")
    p.add_argument("--group", action="append", default=[], help="a group it joins (repeatable)")
    p.add_argument("--admin", action="store_true", help="sees and may change every job")
    _limit_options(p)
    p.set_defaults(func=_run("user add", user_add))
    p = user.add_parser("token", help="issue another token; prints it")
    p.add_argument("name")
    p.set_defaults(func=_run("user token", user_token))
    p = user.add_parser("revoke", help="revoke a user's tokens (all, or those of a prefix)")
    p.add_argument("name")
    p.add_argument("prefix", nargs="?", help="opus_<key> as `opus user list` shows it")
    p.set_defaults(func=_run("user revoke", user_revoke))
    p = user.add_parser("set", help="change a user's admin flag or limits")
    p.add_argument("name")
    p.add_argument("--admin", action=argparse.BooleanOptionalAction, default=None)
    _limit_options(p)
    p.set_defaults(func=_run("user set", user_set))
    p = user.add_parser("list", help="users, groups, tokens (keys only) and their last use")
    p.set_defaults(func=_run("user list", user_list))

    group = commands.add_parser("group", help="groups: sharing, definitions, data rights")
    groups = group.add_subparsers(dest="group_command", required=True)
    p = groups.add_parser("add", help="add a group")
    p.add_argument("name")
    p.add_argument(
        "--right", action="append", default=[], help="a data right it carries (repeatable)"
    )
    _limit_options(p)
    p.set_defaults(func=_run("group add", group_add))
    p = groups.add_parser("list", help="groups, their rights and members")
    p.set_defaults(func=_run("group list", group_list))
    p = groups.add_parser("members", help="list a group's members, adding or removing some")
    p.add_argument("name")
    p.add_argument("--add", action="append", default=[], help="a user to add (repeatable)")
    p.add_argument("--remove", action="append", default=[], help="a user to remove")
    p.set_defaults(func=_run("group members", group_members))

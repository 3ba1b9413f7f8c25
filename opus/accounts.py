"""Managing identities: users, their tokens, groups and memberships (the `opus user` and
`opus group` commands; the web's token page later). Names are checked here; a token is
returned once, when it is made, and only its hash is kept."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from opus.auth import new_token
from opus.errors import BadRequest, NotFound
from opus.store import users as store
from opus.store.db import Database
from opus.timeutil import utcnow

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.@-]{0,63}$")
GROUP = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# Owner names of anonymous jobs in UWS and provenance: no user may take them.
RESERVED = frozenset({"anonymous", "admin-cli"})


@dataclass(frozen=True)
class UserSummary:
    name: str
    admin: bool
    groups: list[str]
    tokens: list[store.TokenRecord]


def _check(pattern: re.Pattern[str], kind: str, name: str) -> str:
    if not pattern.match(name):
        raise BadRequest(
            f"{kind} name {name!r}: a letter, then letters, digits, _ . - (64 or less)"
        )
    return name


class Accounts:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_user(self, name: str, groups: list[str], admin: bool = False) -> str:
        """Create a user in these (existing) groups; its first token."""
        _check(NAME, "user", name)
        if name.lower() in RESERVED:
            raise BadRequest(f"user name {name!r} is reserved")
        with self.db.write() as conn:
            if store.get_user(conn, name) is not None:
                raise BadRequest(f"user {name!r} exists already")
            for group in groups:
                if store.get_group(conn, group) is None:
                    raise NotFound(f"no group {group!r}: create it with `opus group add`")
            store.add_user(conn, name, admin, utcnow())
            for group in groups:
                store.add_member(conn, name, group)
            return self._issue(conn, name)

    def issue_token(self, name: str) -> str:
        with self.db.write() as conn:
            self._user(conn, name)
            return self._issue(conn, name)

    @staticmethod
    def _issue(conn: Connection, name: str) -> str:
        while True:
            key, digest, token = new_token()
            if store.get_token(conn, key) is None:  # 48-bit keys: a clash is rare
                store.add_token(conn, key, name, digest, utcnow())
                return token

    @staticmethod
    def _user(conn: Connection, name: str) -> store.UserRecord:
        user = store.get_user(conn, name)
        if user is None:
            raise NotFound(f"no user {name!r}")
        return user

    def tokens(self, name: str) -> list[store.TokenRecord]:
        """The user's tokens (their keys and times: never their secrets)."""
        with self.db.read() as conn:
            return store.tokens_of(conn, name)

    def revoke(self, name: str, prefix: str = "") -> int:
        """Revoke the user's tokens that start with `prefix` (opus_<key>... or the key);
        all of them when it is empty. How many were revoked."""
        key = prefix.removeprefix("opus_").partition(".")[0]
        with self.db.write() as conn:
            self._user(conn, name)
            return store.revoke_tokens(conn, name, key)

    def set_user(self, name: str, **fields: object) -> None:
        with self.db.write() as conn:
            self._user(conn, name)
            store.set_user(conn, name, **fields)

    def users(self) -> list[UserSummary]:
        with self.db.read() as conn:
            return [
                UserSummary(
                    u.name,
                    u.admin,
                    [g.name for g in store.groups_of(conn, u.name)],
                    store.tokens_of(conn, u.name),
                )
                for u in store.list_users(conn)
            ]

    def add_group(self, name: str, rights: list[str]) -> None:
        _check(GROUP, "group", name)
        for right in rights:
            _check(GROUP, "data right", right)
        with self.db.write() as conn:
            if store.get_group(conn, name) is not None:
                raise BadRequest(f"group {name!r} exists already")
            store.add_group(conn, name, rights, utcnow())

    def set_group(self, name: str, **fields: object) -> None:
        with self.db.write() as conn:
            self._group(conn, name)
            store.set_group(conn, name, **fields)

    @staticmethod
    def _group(conn: Connection, name: str) -> store.GroupRecord:
        group = store.get_group(conn, name)
        if group is None:
            raise NotFound(f"no group {name!r}")
        return group

    def groups(self) -> list[tuple[store.GroupRecord, list[str]]]:
        with self.db.read() as conn:
            return [(g, store.members(conn, g.name)) for g in store.list_groups(conn)]

    def members(self, group: str, add: list[str], remove: list[str]) -> list[str]:
        """Add and remove members of a group; its members then."""
        try:
            with self.db.write() as conn:
                self._group(conn, group)
                for name in add:
                    self._user(conn, name)
                    store.add_member(conn, name, group)
                for name in remove:
                    store.remove_member(conn, name, group)
                return store.members(conn, group)
        except IntegrityError:
            raise BadRequest("the membership changed meanwhile: try again") from None

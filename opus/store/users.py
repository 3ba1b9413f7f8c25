"""Users, their API tokens, groups and memberships, and the groups a job is shared with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, func, insert, select, update

from opus.phases import UNDER_WAY
from opus.store import schema

users: Table = schema.users  # type: ignore[assignment]
groups: Table = schema.groups  # type: ignore[assignment]
memberships: Table = schema.memberships  # type: ignore[assignment]
tokens: Table = schema.tokens  # type: ignore[assignment]
job_shares: Table = schema.job_shares  # type: ignore[assignment]
jobs: Table = schema.jobs  # type: ignore[assignment]


@dataclass(frozen=True)
class UserRecord:
    name: str
    admin: bool
    created: datetime
    max_active_jobs: int | None
    max_execution_duration: int | None
    max_destruction_days: float | None


@dataclass(frozen=True)
class GroupRecord:
    name: str
    rights: str
    created: datetime
    max_active_jobs: int | None
    max_execution_duration: int | None
    max_destruction_days: float | None

    @property
    def right_names(self) -> list[str]:
        return [r.strip() for r in self.rights.split(",") if r.strip()]


@dataclass(frozen=True)
class TokenRecord:
    key: str
    user: str
    secret_sha256: str
    created: datetime
    last_used: datetime | None


def _user(row: Any) -> UserRecord:
    return UserRecord(**row._mapping)


def _group(row: Any) -> GroupRecord:
    return GroupRecord(**row._mapping)


# -- users -----------------------------------------------------------------------------------


def add_user(conn: Connection, name: str, admin: bool, now: datetime) -> None:
    conn.execute(insert(users).values(name=name, admin=admin, created=now))


def get_user(conn: Connection, name: str) -> UserRecord | None:
    row = conn.execute(select(users).where(users.c.name == name)).first()
    return _user(row) if row else None


def list_users(conn: Connection) -> list[UserRecord]:
    return [_user(r) for r in conn.execute(select(users).order_by(users.c.name))]


def set_user(conn: Connection, name: str, **fields: Any) -> None:
    """Change a user's admin flag or limits (a None limit: the groups' or the server's)."""
    conn.execute(update(users).where(users.c.name == name).values(**fields))


# -- groups ----------------------------------------------------------------------------------


def add_group(conn: Connection, name: str, rights: Iterable[str], now: datetime) -> None:
    conn.execute(insert(groups).values(name=name, rights=",".join(rights), created=now))


def get_group(conn: Connection, name: str) -> GroupRecord | None:
    row = conn.execute(select(groups).where(groups.c.name == name)).first()
    return _group(row) if row else None


def list_groups(conn: Connection) -> list[GroupRecord]:
    return [_group(r) for r in conn.execute(select(groups).order_by(groups.c.name))]


def set_group(conn: Connection, name: str, **fields: Any) -> None:
    conn.execute(update(groups).where(groups.c.name == name).values(**fields))


def add_member(conn: Connection, user: str, group: str) -> bool:
    """Put a user in a group; False if it was in it already."""
    found = conn.execute(
        select(memberships.c.user).where(memberships.c.user == user, memberships.c.group == group)
    ).first()
    if found:
        return False
    conn.execute(insert(memberships).values(user=user, group=group))
    return True


def remove_member(conn: Connection, user: str, group: str) -> bool:
    result = conn.execute(
        delete(memberships).where(memberships.c.user == user, memberships.c.group == group)
    )
    return bool(result.rowcount)


def members(conn: Connection, group: str) -> list[str]:
    rows = conn.execute(
        select(memberships.c.user).where(memberships.c.group == group).order_by(memberships.c.user)
    )
    return [r[0] for r in rows]


def groups_of(conn: Connection, user: str) -> list[GroupRecord]:
    rows = conn.execute(
        select(groups)
        .join(memberships, memberships.c.group == groups.c.name)
        .where(memberships.c.user == user)
        .order_by(groups.c.name)
    )
    return [_group(r) for r in rows]


def rights_of(conn: Connection, user: str) -> list[str]:
    """The data rights a user's groups carry, sorted."""
    return sorted({r for g in groups_of(conn, user) for r in g.right_names})


# -- tokens ----------------------------------------------------------------------------------


def add_token(conn: Connection, key: str, user: str, secret_sha256: str, now: datetime) -> None:
    conn.execute(
        insert(tokens).values(key=key, user=user, secret_sha256=secret_sha256, created=now)
    )


def get_token(conn: Connection, key: str) -> TokenRecord | None:
    row = conn.execute(select(tokens).where(tokens.c.key == key)).first()
    return TokenRecord(**row._mapping) if row else None


def tokens_of(conn: Connection, user: str) -> list[TokenRecord]:
    rows = conn.execute(select(tokens).where(tokens.c.user == user).order_by(tokens.c.created))
    return [TokenRecord(**r._mapping) for r in rows]


def touch_token(conn: Connection, key: str, now: datetime) -> None:
    conn.execute(update(tokens).where(tokens.c.key == key).values(last_used=now))


def revoke_tokens(conn: Connection, user: str, key_prefix: str = "") -> int:
    """Delete the user's tokens whose key starts with key_prefix (all when empty)."""
    query = delete(tokens).where(tokens.c.user == user)
    if key_prefix:
        query = query.where(tokens.c.key.startswith(key_prefix, autoescape=True))
    return int(conn.execute(query).rowcount)


# -- what identities own and share -----------------------------------------------------------


def add_shares(conn: Connection, job_id: str, names: Iterable[str]) -> None:
    """Share a job with more groups (a new job: no statement when there are none)."""
    rows = [dict(job_id=job_id, group=g) for g in sorted(set(names))]
    if rows:
        conn.execute(insert(job_shares), rows)


def set_shares(conn: Connection, job_id: str, names: Iterable[str]) -> None:
    """The groups a job is shared with, instead of those it had."""
    conn.execute(delete(job_shares).where(job_shares.c.job_id == job_id))
    add_shares(conn, job_id, names)


def get_shares(conn: Connection, job_id: str) -> frozenset[str]:
    rows = conn.execute(select(job_shares.c.group).where(job_shares.c.job_id == job_id))
    return frozenset(r[0] for r in rows)


def delete_shares(conn: Connection, job_id: str) -> None:
    conn.execute(delete(job_shares).where(job_shares.c.job_id == job_id))


def count_active(conn: Connection, owner: str | None) -> int:
    """The owner's jobs under way, QUEUED or EXECUTING (None: the anonymous ones)."""
    mine = jobs.c.owner.is_(None) if owner is None else jobs.c.owner == owner
    query = select(func.count()).select_from(jobs).where(mine, jobs.c.phase.in_(sorted(UNDER_WAY)))
    return int(conn.execute(query).scalar_one())

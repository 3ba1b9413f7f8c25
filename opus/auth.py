"""Who is asking, and what they may see and do: the one visibility rule of the server.

A job is visible to its owner, to the groups it is shared with and to admins; where
anonymous mode is on, anonymous jobs (no owner) are visible to everyone. An entity is
visible when a job that holds it (generated, uploaded or downloaded it) or used it is
visible. The rule exists twice, as Python for one object (`may_see`) and as SQL for lists
and queries (`visible_jobs`, `visible_entities`, `visible_nodes`); a property test keeps
the two equal. Every door asks here.

Tokens are `opus_<key>.<secret>`: the key finds the row and tells tokens apart, only the
secret's SHA-256 is kept (a token is 256 random bits: a slow hash adds nothing) and it
is compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, false, func, or_, select, true

from opus.config import Settings
from opus.errors import Forbidden, Unauthorized
from opus.ids import INVALIDATION_PREFIX, JOB_PREFIX, user_qname
from opus.jobdefs.model import JobDefinition
from opus.store import jobs as store
from opus.store import users as accounts
from opus.store.db import Database
from opus.timeutil import utcnow
from provenance import store as prov
from provenance.query import Allowed

TOKEN_PREFIX = "opus_"
CHALLENGES = ('Basic realm="opus"', 'Bearer realm="opus"')
# How long a verified token is trusted without asking the database again: a revoked
# token stops working within this time.
CACHE_SECONDS = 5.0
TOUCH_EVERY = timedelta(minutes=1)  # last-used times are kept to this precision


@dataclass(frozen=True)
class Limits:
    max_active_jobs: int  # QUEUED or EXECUTING at once; 0: no limit
    max_execution_duration: int  # seconds
    max_destruction_days: float


@dataclass(frozen=True)
class Caller:
    """The identity a request acts as: a user, or anonymous (name None)."""

    name: str | None
    groups: frozenset[str] = frozenset()
    admin: bool = False
    # anonymous mode is on: anonymous jobs are everyone's
    anonymous_public: bool = False
    rights: frozenset[str] = frozenset()  # data rights of the user's groups
    limits: Limits | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return self.name or "anonymous"


def server_limits(settings: Settings) -> Limits:
    return Limits(
        settings.max_active_jobs, settings.max_execution_duration, settings.max_destruction_days
    )


def limits_of(settings: Settings, caller: Caller) -> Limits:
    return caller.limits or server_limits(settings)


# -- the rule, in Python ----------------------------------------------------------------------


def may_see(caller: Caller, owner: str | None, shares: Iterable[str] = ()) -> bool:
    """Whether the caller may see a job of this owner shared with these groups."""
    if caller.admin:
        return True
    if owner is None and caller.anonymous_public:
        return True
    if owner is not None and owner == caller.name:
        return True
    return not caller.groups.isdisjoint(shares)


def may_change(caller: Caller, owner: str | None) -> bool:
    """Whether the caller may change, run, abort or delete a job it can see."""
    if caller.admin:
        return True
    if owner is None:
        return caller.anonymous_public
    return owner == caller.name


def may_see_entity(caller: Caller, holders: Iterable[tuple[str | None, Iterable[str]]]) -> bool:
    """Whether the caller may see an entity held or used by jobs of these (owner, shares)."""
    return any(may_see(caller, owner, shares) for owner, shares in holders)


def may_run(caller: Caller, jobdef: JobDefinition) -> bool:
    """A definition restricted to groups is for their members (and admins) only."""
    return caller.admin or not jobdef.groups or not caller.groups.isdisjoint(jobdef.groups)


def check_may_run(caller: Caller, jobdef: JobDefinition) -> None:
    if not may_run(caller, jobdef):
        raise Forbidden(
            f"{jobdef.name} may be run by members of {', '.join(jobdef.groups)} only"
            + ("" if caller.name else ": send your credentials")
        )


# -- the rule, in SQL -------------------------------------------------------------------------


def visible_jobs(caller: Caller) -> ColumnElement[bool]:
    """The condition on the jobs table that `may_see` is, for lists and queries."""
    jobs = store.jobs
    if caller.admin:
        return true()
    either: list[ColumnElement[bool]] = []
    if caller.anonymous_public:
        either.append(jobs.c.owner.is_(None))
    if caller.name is not None:
        either.append(jobs.c.owner == caller.name)
    if caller.groups:
        shares = accounts.job_shares
        either.append(
            exists().where(shares.c.job_id == jobs.c.id, shares.c.group.in_(sorted(caller.groups)))
        )
    return or_(*either) if either else false()


def visible_job_ids(caller: Caller) -> Select[tuple[str]]:
    return select(store.jobs.c.id).where(visible_jobs(caller))


def visible_entities(caller: Caller) -> ColumnElement[bool]:
    """The condition on the entities table that `may_see_entity` is."""
    if caller.admin:
        return true()
    entities, inputs = store.entities, store.job_inputs
    seen = visible_job_ids(caller)
    return or_(
        entities.c.job_id.in_(seen),
        exists().where(inputs.c.entity_id == entities.c.id, inputs.c.job_id.in_(seen)),
    )


def visible_nodes(caller: Caller) -> Allowed | None:
    """The provenance ids the caller may see, as a condition on an id column (None: all,
    for admins); each id is checked by index lookups where it is met, so that a walk or a
    query costs what it reads, not what the caller owns.

    An activity is visible when its job is, or, once the job is destroyed, when the
    caller was its owner (the shares go with the job); an entity when an activity that
    generated or used it is visible; the activity that invalidated an entity when the
    entity is."""
    if caller.admin:
        return None
    jobs = store.jobs
    owners = [user_qname(caller.name)] if caller.name else []
    if caller.anonymous_public:
        owners.append(user_qname(None))

    def job_of(activity: Any) -> ColumnElement[Any]:
        return func.substr(activity, len(JOB_PREFIX) + 1)

    def activity_visible(activity: Any) -> ColumnElement[bool]:
        is_job = func.substr(activity, 1, len(JOB_PREFIX)) == JOB_PREFIX
        shown = exists().where(is_job, jobs.c.id == job_of(activity), visible_jobs(caller))
        if not owners:
            return shown
        owned = prov.associations.alias("owned")
        destroyed = exists().where(
            is_job,  # a one-time filter: an entity's id is not looked up
            owned.c.activity_id == activity,
            owned.c.role == "owner",
            owned.c.agent_id.in_(owners),
            # on `owned`, the enclosing query: `activity` would not correlate from here
            ~exists().where(jobs.c.id == job_of(owned.c.activity_id)),
        )
        return or_(shown, destroyed)

    def entity_visible(node: Any, suffix: str = "") -> ColumnElement[bool]:
        generated = prov.generations.alias(f"seen_generated{suffix}")
        used = prov.used.alias(f"seen_used{suffix}")
        return or_(
            exists().where(
                generated.c.entity_id == node, activity_visible(generated.c.activity_id)
            ),
            exists().where(used.c.entity_id == node, activity_visible(used.c.activity_id)),
        )

    def invalidation_visible(node: Any) -> ColumnElement[bool]:
        ended = prov.invalidations.alias("seen_invalidated")
        return exists().where(
            func.substr(node, 1, len(INVALIDATION_PREFIX)) == INVALIDATION_PREFIX,
            ended.c.activity_id == node,
            entity_visible(ended.c.entity_id, "_invalidated"),
        )

    def node_visible(node: Any) -> ColumnElement[bool]:
        return or_(activity_visible(node), entity_visible(node), invalidation_visible(node))

    return node_visible


# -- tokens -----------------------------------------------------------------------------------


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """(key, sha256 of the secret, the token to show once)."""
    key = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key, _digest(secret), f"{TOKEN_PREFIX}{key}.{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    """(key, secret) of a token of this server's form, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key, dot, secret = token[len(TOKEN_PREFIX) :].partition(".")
    if not dot or not key or not secret or len(key) > 16:
        return None
    return key, secret


def credentials(header: str) -> tuple[str | None, str]:
    """(user name or None, token) from an Authorization header: Basic user:token, or
    Bearer token. Raises Unauthorized for anything else."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return None, value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("the Basic credentials are not base64 of user:token") from None
        user, colon, token = decoded.partition(":")
        if colon:
            return user, token
    raise Unauthorized("send Authorization: Basic user:token, or Bearer token")


class Identities:
    """Finds the caller of a request from its Authorization header."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.anonymous = Caller(None, anonymous_public=settings.anonymous)
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def caller(self, authorization: str | None) -> Caller:
        """The caller; Unauthorized when the credentials are wrong, or missing where
        anonymous access is off."""
        if not authorization:
            if not self.settings.anonymous:
                raise Unauthorized(
                    "this server needs credentials: HTTP Basic user:token or Bearer token"
                )
            return self.anonymous
        user, token = credentials(authorization)
        found = self._cached(_digest(token), lambda: self._verify(user, token))
        if user is not None and user != found.name:
            raise Unauthorized("the token is not that user's")
        return found

    def session(self, name: str) -> Caller:
        """The caller a signed session cookie names (cached as a token's caller is)."""
        return self._cached("session:" + name, lambda: self.load(name))

    def _cached(self, key: str, make: Callable[[], Caller]) -> Caller:
        """The caller found for `key` less than CACHE_SECONDS ago, else made now."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        found = make()
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, found)
        return found

    def _verify(self, user: str | None, token: str) -> Caller:
        parts = split_token(token)
        if parts is None:
            raise Unauthorized("the token is not an OPUS token (opus_<key>.<secret>)")
        key, secret = parts
        with self.db.read() as conn:
            record = accounts.get_token(conn, key)
        if record is None or not hmac.compare_digest(record.secret_sha256, _digest(secret)):
            raise Unauthorized("unknown or revoked token")
        if user is not None and user != record.user:
            raise Unauthorized("the token is not that user's")
        now = utcnow()
        if record.last_used is None or now - record.last_used >= TOUCH_EVERY:
            with self.db.statements() as conn:
                accounts.touch_token(conn, key, now)
        return self.load(record.user)

    def load(self, name: str) -> Caller:
        """The caller a user is (for the CLI's --user, and after a token is verified)."""
        with self.db.read() as conn:
            user = accounts.get_user(conn, name)
            if user is None:
                raise Unauthorized(f"no user {name!r}")
            groups = accounts.groups_of(conn, name)
        return Caller(
            user.name,
            frozenset(g.name for g in groups),
            user.admin,
            self.settings.anonymous,
            frozenset(r for g in groups for r in g.right_names),
            user_limits(self.settings, user, groups),
        )


def user_limits(
    settings: Settings, user: accounts.UserRecord, groups: list[accounts.GroupRecord]
) -> Limits:
    """A user's own limit where set, else the most generous of its groups', else the
    server's (0 active jobs: no limit)."""
    server = server_limits(settings)

    def pick(own: float | None, theirs: list[float | None], default: float) -> float:
        if own is not None:
            return own
        given = [v for v in theirs if v is not None]
        if not given:
            return default
        return 0 if 0 in given else max(given)

    active = pick(user.max_active_jobs, [g.max_active_jobs for g in groups], server.max_active_jobs)
    duration = pick(
        user.max_execution_duration,
        [g.max_execution_duration for g in groups],
        server.max_execution_duration,
    )
    days = pick(
        user.max_destruction_days,
        [g.max_destruction_days for g in groups],
        server.max_destruction_days,
    )
    return Limits(int(active), int(duration), float(days))

"""Recording an activity: its context, and its rows written inside the caller's transaction.

The caller passes the connection of its own transaction, so that an activity's
provenance is committed with the activity's outcome or not at all.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Table, event, select
from sqlalchemy.dialects import postgresql, sqlite

from provenance import store
from provenance.model import Activity, Invalidation, RoleDescription

__all__ = ["PACKAGES", "context", "context_qname", "git_commit", "invalidate", "record"]

PACKAGES = ("opus-uws", "prov", "sqlalchemy", "astropy", "numpy", "gammapy", "celery")


@functools.cache
def _static_context() -> dict[str, str]:
    """What does not change in this process: Python, platform, host, package versions and
    the container id found in the cgroup (read once; never the environment)."""
    context = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
    }
    for name in PACKAGES:
        try:
            context[f"package:{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    image = _container_id()
    if image:
        context["container"] = image
    return context


def _container_id() -> str:
    """The container id when running in one (cgroup path), else ''."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            tail = line.rsplit("/", 1)[-1]
            for prefix in ("docker-", "cri-containerd-", "libpod-"):
                tail = tail.removeprefix(prefix)
            tail = tail.removesuffix(".scope")
            if len(tail) == 64 and all(c in "0123456789abcdef" for c in tail):
                return tail
    except OSError:
        pass
    return ""


@functools.cache
def git_commit(folder: str) -> str:
    """The git commit of the code in a folder (cached per folder).

    Args:
        folder: A folder, in a git checkout or not.

    Returns:
        The commit id of HEAD, or '' when `folder` is not in a git checkout (or git is
        missing).
    """
    try:
        result = subprocess.run(
            ["git", "-C", folder, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def context(
    worker: str, code_folder: str | None = None, *, container: str | None = None
) -> dict[str, str]:
    """The execution context of an activity, for `Activity.context`.

    Args:
        worker: A name for what runs the activity (e.g. a worker or host name).
        code_folder: The folder of the code run; its git commit is added when it is in a
            git checkout.
        container: The container image (or container) id, as the caller knows it; when
            None or empty, the container id found in the cgroup, if any.

    Returns:
        Key/value pairs: python, platform, host, package:<name> versions, container,
        worker, pid and git_commit (those that are known).
    """
    found = dict(_static_context(), worker=worker, pid=str(os.getpid()))
    if container:
        found["container"] = container
    if code_folder:
        commit = git_commit(code_folder)
        if commit:
            found["git_commit"] = commit
    return found


@functools.cache
def _insert_sql(dialect: Dialect, table: Table, keep_existing: bool) -> tuple[str, list[str], bool]:
    """An INSERT of every column compiled once for the dialect: its SQL, its column order,
    and whether the driver takes positional parameters."""
    statement: Any = table.insert()
    if keep_existing and dialect.name == "sqlite":
        statement = sqlite.insert(table).on_conflict_do_nothing()
    elif keep_existing and dialect.name == "postgresql":
        statement = postgresql.insert(table).on_conflict_do_nothing()
    columns = [c.name for c in table.columns]
    compiled = statement.values({name: None for name in columns}).compile(dialect=dialect)
    positions = list(compiled.positiontup or [])
    return str(compiled), positions or columns, bool(positions)


def _sqlite_value(value: Any) -> Any:
    # SQLAlchemy's SQLite DateTime storage format, so that its readers parse it back
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value


Write = tuple[Table, Sequence[dict[str, Any]], bool]  # table, rows, keep existing rows


def _write_all(conn: Connection, writes: Sequence[Write]) -> None:
    """Insert the rows of every write, through the driver, in one batch: on PostgreSQL one
    pipeline (a single round trip), skipping SQLAlchemy's per-statement work (recording is
    on every job's path). Keep-existing writes leave rows whose key is already there
    (entities, agents, descriptions and contexts are shared between activities)."""
    dialect = conn.dialect
    if dialect.name not in ("sqlite", "postgresql"):
        for table, rows, keep_existing in writes:
            keys = [c.name for c in table.primary_key.columns]
            for row in rows:
                where = [table.c[k] == row[k] for k in keys]
                if not keep_existing or conn.execute(table.select().where(*where)).first() is None:
                    conn.execute(table.insert(), [row])
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    convert = _sqlite_value if dialect.name == "sqlite" else (lambda value: value)
    batch: Any = driver.pipeline() if dialect.name == "postgresql" else contextlib.nullcontext()
    with batch:
        cursor = driver.cursor()
        for table, rows, keep_existing in writes:
            if not rows:
                continue
            sql, names, positional = _insert_sql(dialect, table, keep_existing)
            if positional:
                params: Any = [tuple(convert(row.get(n)) for n in names) for row in rows]
            else:
                params = [{n: convert(row.get(n)) for n in names} for row in rows]
            cursor.executemany(sql, params)
        cursor.close()


def _unique(rows: Iterable[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(tuple(row[k] for k in keys), row)
    return list(seen.values())


# Shared rows (activity descriptions, contexts, agents) are the same for most activities:
# recording writes each once per process and database, not with every activity. A row
# counts as stored once the transaction that wrote it commits, so that an activity rolled
# back (its job's end failed) does not leave later ones pointing at nothing; a broken
# connection (a COMMIT may have failed with it) makes every shared row be written again.
_stored: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()
_pending: weakref.WeakKeyDictionary[Connection, set[str]] = weakref.WeakKeyDictionary()


def _stored_keys(engine: Engine) -> set[str]:
    keys = _stored.get(engine)
    if keys is None:
        keys = _stored[engine] = set()
        event.listen(engine, "commit", _on_commit)
        event.listen(engine, "rollback", _on_rollback)
        event.listen(engine, "invalidate", lambda *_: keys.clear())
    return keys


def _on_commit(conn: Connection) -> None:
    written = _pending.pop(conn, None)
    if written:
        _stored[conn.engine].update(written)


def _on_rollback(conn: Connection) -> None:
    _pending.pop(conn, None)


def context_qname(activity: Activity) -> str:
    """The identifier of an activity's context, from its content (identical contexts are
    stored once).

    Args:
        activity: The activity, whose id gives the prefix.

    Returns:
        A qualified name, ``<prefix of the activity id>:context_<digest>``.
    """
    digest = hashlib.sha256(json.dumps(sorted(activity.context.items())).encode()).hexdigest()
    return f"{activity.id.partition(':')[0]}:context_{digest[:16]}"


def record(
    conn: Connection,
    activity: Activity,
    also: Sequence[tuple[Table, Sequence[dict[str, Any]]]] = (),
) -> None:
    """Write an activity's provenance in the caller's transaction (once per activity).

    Entities, agents, descriptions and contexts already stored are kept as they are; the
    rows are committed or rolled back with the caller's transaction. The activities it
    was informed by need not be recorded yet (a document shows the communication once
    both are).

    Args:
        conn: A connection inside a transaction (e.g. from ``engine.begin()``), on a
            database with the tables of `provenance.store.metadata`.
        activity: The activity and everything it touched.
        also: Rows of the caller's own tables, ``(table, rows)``, to insert in the same
            batch (on PostgreSQL one round trip for all).

    Returns:
        None.
    """
    stored = _stored_keys(conn.engine)
    written = _pending.setdefault(conn, set())

    def unstored(key: str) -> bool:
        if key in stored or key in written:
            return False
        written.add(key)
        return True

    description = activity.description
    new_description = unstored(f"description {description.id}")

    def roles(described: Sequence[RoleDescription]) -> list[dict[str, Any]]:
        if not new_description:
            return []
        return [dict(vars(r), description_id=description.id) for r in described]

    context_id = context_qname(activity) if activity.context else None
    contexts = (
        [dict(context_id=context_id, key=k, value=v) for k, v in activity.context.items()]
        if context_id and unstored(f"context {context_id}")
        else []
    )
    entities = [vars(e) for e, _ in activity.used + activity.generated]
    activity_row = dict(
        id=activity.id,
        name=activity.name,
        start_time=activity.start_time,
        end_time=activity.end_time,
        status=activity.status,
        description_id=activity.description.id,
        context_id=context_id,
        comment=activity.comment,
        replaces=activity.replaces,
    )
    used = [
        dict(activity_id=activity.id, entity_id=e.id, role=role, time=activity.start_time)
        for e, role in activity.used
    ]
    generated = [
        dict(entity_id=e.id, activity_id=activity.id, role=role, time=e.generated_at)
        for e, role in activity.generated
    ]
    pairs = (
        [(g.id, u.id) for g, _ in activity.generated for u, _ in activity.used]
        if activity.derivations is None
        else activity.derivations
    )
    derivations = [
        dict(generated_id=generated, used_id=used, activity_id=activity.id)
        for generated, used in pairs
    ]
    associations = [
        dict(activity_id=activity.id, agent_id=a.id, role=role) for a, role in activity.agents
    ]
    parameters = [dict(vars(p), activity_id=activity.id) for p in activity.parameters]
    communications = [
        dict(informed=activity.id, informant=informant)
        for informant in dict.fromkeys(activity.informed_by)
    ]
    attributes = [
        dict(activity_id=activity.id, name=name, value=value)
        for name, value in activity.attributes.items()
    ]
    _write_all(
        conn,
        [
            (store.activity_descriptions, [description.row()] if new_description else [], True),
            (store.usage_descriptions, roles(description.used), True),
            (store.generation_descriptions, roles(description.generated), True),
            (store.contexts, contexts, True),
            (store.entities, _unique(entities, ["id"]), True),
            (
                store.agents,
                _unique([vars(a) for a, _ in activity.agents if unstored(f"agent {a.id}")], ["id"]),
                True,
            ),
            (store.activities, [activity_row], False),
            (store.used, _unique(used, ["entity_id", "role"]), False),
            (store.generations, generated, True),
            (store.derivations, _unique(derivations, ["generated_id", "used_id"]), True),
            (store.associations, _unique(associations, ["agent_id", "role"]), False),
            (store.parameters, _unique(parameters, ["name"]), False),
            (store.communications, communications, False),
            (store.activity_attributes, attributes, False),
            *[(table, rows, False) for table, rows in also],
        ],
    )


def invalidate(conn: Connection, invalidation: Invalidation) -> bool:
    """Record an entity's invalidation in the caller's transaction: the invalidation
    activity (its reason as its comment, at one instant), its agent, and wasInvalidatedBy.

    Args:
        conn: A connection inside a transaction, on the tables of `provenance.store`.
        invalidation: What ended the entity, when, why and by whom.

    Returns:
        True; False when the entity was invalidated already (PROV: an entity is
        invalidated once), nothing written then.
    """
    done = store.invalidations.c
    if conn.execute(select(done.entity_id).where(done.entity_id == invalidation.entity_id)).first():
        return False
    when, agent = invalidation.time, invalidation.agent
    activity = dict(
        id=invalidation.activity_id,
        name=invalidation.name,
        start_time=when,
        end_time=when,
        comment=invalidation.reason,
    )
    association = dict(activity_id=invalidation.activity_id, agent_id=agent.id)
    ended = dict(entity_id=invalidation.entity_id, activity_id=invalidation.activity_id, time=when)
    _write_all(
        conn,
        [
            (store.agents, [vars(agent)], True),
            (store.activities, [activity], False),
            (store.associations, [dict(association, role=invalidation.role)], False),
            (store.invalidations, [ended], False),
        ],
    )
    return True

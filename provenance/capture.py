"""Recording an activity: its context, and its rows written inside the caller's transaction.

The caller passes the connection of its own transaction, so that an activity's
provenance is committed with the activity's outcome or not at all.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, delete
from sqlalchemy.dialects import postgresql, sqlite

from provenance import store
from provenance.model import Activity

PACKAGES = ("opus-uws", "prov", "sqlalchemy", "astropy", "numpy", "gammapy", "celery")


@functools.cache
def _static_context() -> dict[str, str]:
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
    image = os.environ.get("CONTAINER_IMAGE_ID") or _container_id()
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
    """The git commit of the code in `folder`, when it is in a git checkout ('' if not)."""
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


def context(worker: str, code_folder: str | None = None) -> dict[str, str]:
    """The execution context of an activity run by `worker` with code from `code_folder`."""
    found = dict(_static_context(), worker=worker, pid=str(os.getpid()))
    if code_folder:
        commit = git_commit(code_folder)
        if commit:
            found["git_commit"] = commit
    return found


def _insert_new(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, leaving those whose key is already there (entities, agents, descriptions
    are shared between activities)."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":
        conn.execute(sqlite.insert(table).on_conflict_do_nothing(), list(rows))
    elif dialect == "postgresql":
        conn.execute(postgresql.insert(table).on_conflict_do_nothing(), list(rows))
    else:
        keys = [c.name for c in table.primary_key.columns]
        for row in rows:
            found = conn.execute(
                table.select().where(*(table.c[k] == row[k] for k in keys))
            ).first()
            if found is None:
                conn.execute(table.insert(), [row])


def _unique(rows: Iterable[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(tuple(row[k] for k in keys), row)
    return list(seen.values())


def context_qname(activity: Activity) -> str:
    """Contexts are identified by their content, so identical ones are stored once."""
    digest = hashlib.sha256(json.dumps(sorted(activity.context.items())).encode()).hexdigest()
    return f"{activity.id.partition(':')[0]}:context_{digest[:16]}"


def record(conn: Connection, activity: Activity) -> None:
    """Write (or rewrite) an activity's provenance in the caller's transaction."""
    for table in (store.used, store.associations, store.parameters):
        conn.execute(delete(table).where(table.c.activity_id == activity.id))
    conn.execute(delete(store.derivations).where(store.derivations.c.activity_id == activity.id))
    conn.execute(delete(store.activities).where(store.activities.c.id == activity.id))

    _insert_new(conn, store.activity_descriptions, [asdict(activity.description)])
    context_id = context_qname(activity) if activity.context else None
    if context_id is not None:
        _insert_new(
            conn,
            store.contexts,
            [dict(context_id=context_id, key=k, value=v) for k, v in activity.context.items()],
        )
    entities = [asdict(e) for e, _ in activity.used + activity.generated]
    _insert_new(conn, store.entities, _unique(entities, ["id"]))
    _insert_new(conn, store.agents, _unique([asdict(a) for a, _ in activity.agents], ["id"]))
    conn.execute(
        store.activities.insert(),
        [
            dict(
                id=activity.id,
                name=activity.name,
                start_time=activity.start_time,
                end_time=activity.end_time,
                status=activity.status,
                description_id=activity.description.id,
                context_id=context_id,
                comment=activity.comment,
            )
        ],
    )
    used_rows = _unique(
        [
            dict(activity_id=activity.id, entity_id=e.id, role=role, time=activity.start_time)
            for e, role in activity.used
        ],
        ["entity_id", "role"],
    )
    if used_rows:
        conn.execute(store.used.insert(), used_rows)
    generated_rows = [
        dict(entity_id=e.id, activity_id=activity.id, role=role, time=e.generated_at)
        for e, role in activity.generated
    ]
    _insert_new(conn, store.generations, generated_rows)
    derivations = _unique(
        [
            dict(generated_id=g.id, used_id=u.id, activity_id=activity.id)
            for g, _ in activity.generated
            for u, _ in activity.used
        ],
        ["generated_id", "used_id"],
    )
    _insert_new(conn, store.derivations, derivations)
    associations = _unique(
        [dict(activity_id=activity.id, agent_id=a.id, role=role) for a, role in activity.agents],
        ["agent_id", "role"],
    )
    if associations:
        conn.execute(store.associations.insert(), associations)
    if activity.parameters:
        conn.execute(
            store.parameters.insert(),
            _unique(
                [dict(asdict(p), activity_id=activity.id) for p in activity.parameters], ["name"]
            ),
        )

"""The one visibility rule: for random users, groups, shares and jobs, the SQL predicates
(lists, queries) and the Python rule (one object) agree, and no job of another user
appears to anyone it is not shared with. Runs on the suite's database (SQLite, or
PostgreSQL with OPUS_TEST_DATABASE)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, delete, insert, literal, select

from opus.auth import (
    Caller,
    may_see,
    may_see_entity,
    visible_entities,
    visible_jobs,
    visible_nodes,
)
from opus.ids import entity_qname, job_qname, user_qname
from opus.store import jobs as store
from opus.store import users as accounts
from opus.store.db import Database
from opus.store.migrate import ensure_current
from opus.timeutil import utcnow
from provenance import store as prov
from provenance.query import Allowed
from tests.servers import database_url

USERS = ["alice", "bob", "carol", "dave"]
GROUPS = ["ztf", "hess", "tides"]

owners = st.one_of(st.none(), st.sampled_from(USERS))
group_sets = st.frozensets(st.sampled_from(GROUPS), max_size=3)
callers = st.builds(
    Caller,
    name=st.one_of(st.none(), st.sampled_from([*USERS, "eve"])),
    groups=group_sets,
    admin=st.booleans(),
    anonymous_public=st.booleans(),
)
jobs = st.lists(st.tuples(owners, group_sets), min_size=0, max_size=12)
# entities: (the job holding it, the jobs using it), as indexes into the jobs
entities = st.lists(
    st.tuples(st.integers(0, 11), st.frozensets(st.integers(0, 11), max_size=3)), max_size=8
)

TABLES = [
    store.jobs,
    store.entities,
    store.job_inputs,
    accounts.job_shares,
    prov.activities,
    prov.entities,
    prov.used,
    prov.generations,
    prov.associations,
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    folder: Path = tmp_path_factory.mktemp("visibility")
    database = Database(database_url(folder))
    ensure_current(database)
    yield database
    database.engine.dispose()


def _fill(
    db: Database,
    job_rows: list[tuple[str | None, frozenset[str]]],
    entity_rows: list[tuple[int, frozenset[int]]],
) -> tuple[list[str], list[str]]:
    """Store the jobs (with their provenance: activity, owner, entities used and generated)
    and the entities; their ids."""
    now = utcnow()
    job_ids = [f"{i:016x}" for i in range(len(job_rows))]
    entity_ids = [f"e{i:015x}" for i in range(len(entity_rows))]
    positions: dict[int, int] = {}  # a job's inputs so far
    with db.write() as conn:
        for table in TABLES:
            conn.execute(delete(table))
        for job_id, (owner, shares) in zip(job_ids, job_rows, strict=True):
            store.insert_job(
                conn,
                store.new_job(
                    id=job_id,
                    jobdef="hello",
                    owner=owner,
                    phase="COMPLETED",
                    creation_time=now,
                    execution_duration=60,
                    destruction=now + timedelta(days=1),
                ),
                [],
            )
            accounts.set_shares(conn, job_id, shares)
            conn.execute(insert(prov.activities).values(id=job_qname(job_id), name="hello"))
            conn.execute(
                insert(prov.associations).values(
                    activity_id=job_qname(job_id), agent_id=user_qname(owner), role="owner"
                )
            )
        for entity_id, (holder, users) in zip(entity_ids, entity_rows, strict=True):
            if holder >= len(job_ids):
                continue
            store.insert_entities(
                conn,
                [
                    store.new_entity(
                        id=entity_id,
                        job_id=job_ids[holder],
                        name="out",
                        origin="result",
                        path="x",
                        file_name="x",
                        content_type="text/plain",
                        sha256="0" * 64,
                        size=0,
                    )
                ],
            )
            conn.execute(insert(prov.entities).values(id=entity_qname(entity_id), name="x"))
            conn.execute(
                insert(prov.generations).values(
                    entity_id=entity_qname(entity_id),
                    activity_id=job_qname(job_ids[holder]),
                    role="out",
                )
            )
            for user in sorted(u for u in users if u < len(job_ids)):
                positions[user] = positions.get(user, -1) + 1
                conn.execute(
                    insert(store.job_inputs).values(
                        job_id=job_ids[user],
                        role="in",
                        position=positions[user],
                        entity_id=entity_id,
                    )
                )
                conn.execute(
                    insert(prov.used).values(
                        activity_id=job_qname(job_ids[user]),
                        entity_id=entity_qname(entity_id),
                        role="in",
                    )
                )
    return job_ids, entity_ids


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(callers, jobs, entities)
def test_sql_and_python_rules_agree(
    db: Database,
    caller: Caller,
    job_rows: list[tuple[str | None, frozenset[str]]],
    entity_rows: list[tuple[int, frozenset[int]]],
) -> None:
    job_ids, entity_ids = _fill(db, job_rows, entity_rows)
    rule = {
        job_id
        for job_id, (owner, shares) in zip(job_ids, job_rows, strict=True)
        if may_see(caller, owner, shares)
    }
    with db.read() as conn:
        listed = {r[0] for r in conn.execute(select(store.jobs.c.id).where(visible_jobs(caller)))}
        seen_entities = {
            r[0] for r in conn.execute(select(store.entities.c.id).where(visible_entities(caller)))
        }
        allowed = visible_nodes(caller)
        candidates = {job_qname(j) for j in job_ids} | {entity_qname(e) for e in entity_ids}
        nodes = (
            _passing(conn, allowed, candidates)
            if allowed is not None
            else {job_qname(j) for j in job_ids} | {entity_qname(e) for e in seen_entities}
        )
    assert listed == rule
    # no job of another user that is not shared with the caller, unless admin
    for job_id, (owner, shares) in zip(job_ids, job_rows, strict=True):
        if job_id in listed and not caller.admin:
            assert (
                owner == caller.name
                or (owner is None and caller.anonymous_public)
                or shares & caller.groups
            )
    expected_entities = set()
    for entity_id, (holder, users) in zip(entity_ids, entity_rows, strict=True):
        if holder >= len(job_ids):
            continue
        holders = [holder, *(u for u in users if u < len(job_ids))]
        if may_see_entity(caller, [job_rows[i] for i in holders]):
            expected_entities.add(entity_id)
    assert seen_entities == expected_entities
    # the provenance walk's allowed nodes: the visible jobs' activities and entities
    assert nodes == {job_qname(j) for j in rule} | {entity_qname(e) for e in expected_entities}


def _passing(conn: Connection, allowed: Allowed, ids: set[str]) -> set[str]:
    """Those of the ids the condition of `visible_nodes` lets through."""
    return {i for i in ids if conn.execute(select(literal(i)).where(allowed(literal(i)))).first()}


def test_destroyed_jobs_provenance_stays_with_its_owner(db: Database) -> None:
    """Once a job is destroyed, its activity is visible to its owner still (the shares
    went with the job), to nobody else but admins."""
    job_ids, _ = _fill(db, [("alice", frozenset({"ztf"}))], [])
    with db.write() as conn:
        store.delete_job(conn, job_ids[0])
    activity = job_qname(job_ids[0])
    for caller, sees in [
        (Caller("alice"), True),
        (Caller("carol", frozenset({"ztf"})), False),
        (Caller("bob", anonymous_public=True), False),
    ]:
        allowed = visible_nodes(caller)
        assert allowed is not None
        with db.read() as conn:
            assert (activity in _passing(conn, allowed, {activity})) is sees, caller

"""The ADQL translator in-process, on a store filled with recorded activities (SQLite, and
PostgreSQL when OPUS_TEST_DATABASE names it): the whitelist, the visibility of every
view, identifier comparisons on stored forms, lineage equal to ProvSAP's walk, and the
read-only connection."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from opus.auth import Caller, visible_nodes
from opus.ids import qualified_name
from opus.store.db import Database
from opus.store.readonly import QueryFailed, QueryTimeout, ReadOnlyQueries
from opus.tap.adql import AdqlError, translate
from opus.tap.schema import PROVENANCE_TABLES, Reader
from provenance import query as lineage_query
from provenance.capture import invalidate, record
from provenance.model import (
    Activity,
    ActivityDescription,
    Agent,
    Entity,
    Invalidation,
    Parameter,
    RoleDescription,
)
from tests.servers import database_url

BASE = "https://archive.example"
NS = f"{BASE}/prov/"
DESCRIPTION = ActivityDescription(
    "opus:jobdef_step_1",
    "step",
    "1",
    used=(RoleDescription("input", "what it reads", "*", "text/plain"),),
    generated=(RoleDescription("output", "what it writes", "1", "text/plain"),),
)


def _activity(n: int, used: list[Entity], generated: list[Entity], owner: str) -> Activity:
    return Activity(
        f"opus:job_{n:016x}",
        "step",
        DESCRIPTION,
        datetime(2026, 12, 1, 10, n),
        datetime(2026, 12, 1, 10, n, 30),
        "COMPLETED",
        parameters=[Parameter("n", str(n), "int")],
        used=[(e, "input") for e in used],
        generated=[(e, "output") for e in generated],
        agents=[(Agent(f"opus:user_{owner}", "Person", owner), "owner")],
        context={"python": "3.11"},
    )


def _entity(n: int) -> Entity:
    return Entity(
        f"opus:ent_{n:016x}",
        f"f{n}.txt",
        f"/store/{n:016x}",
        "text/plain",
        3,
        "ab",
        datetime(2026, 12, 1, 11, n),
        "result",
    )


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A chain 0 -> job1 -> 1 -> job2 -> 2, a fan-out job3 (from 1), a fan-in job4 (2 and 3);
    jobs 1-4 alice's, job 5 (from 0) bob's; entities 3 and 5 invalidated by root."""
    folder: Path = tmp_path_factory.mktemp("adql")
    database = Database(database_url(folder))
    database.create_schema()
    e = {n: _entity(n) for n in range(6)}
    with database.write() as conn:
        record(conn, _activity(1, [e[0]], [e[1]], "alice"))
        record(conn, _activity(2, [e[1]], [e[2]], "alice"))
        record(conn, _activity(3, [e[1]], [e[3]], "alice"))
        record(conn, _activity(4, [e[2], e[3]], [e[4]], "alice"))
        record(conn, _activity(5, [e[0]], [e[5]], "bob"))
        root = Agent("opus:user_root", "Person", "root")
        for n, entity in ((1, 3), (2, 5)):  # alice's entity 3 and bob's 5 found wrong
            invalidate(
                conn,
                Invalidation(
                    e[entity].id, f"opus:inval_{n:016x}", datetime(2026, 12, 2), "bad", root
                ),
            )
        from opus.store.schema import Job  # the jobs the visibility rule reads

        for n, owner in ((1, "alice"), (2, "alice"), (3, "alice"), (4, "alice"), (5, "bob")):
            conn.execute(
                Job.__table__.insert().values(
                    id=f"{n:016x}",
                    jobdef="step",
                    owner=owner,
                    phase="COMPLETED",
                    creation_time=datetime(2026, 12, 1),
                    execution_duration=60,
                    destruction=datetime(2027, 12, 1),
                )
            )
    yield database
    database.engine.dispose()


def run(db: Database, adql: str, caller: Caller | None = None, maxrec: int = 1000) -> list[tuple]:
    reader = Reader(
        NS, "https://archive.example", visible_nodes(caller) if caller else None, db.is_sqlite
    )
    translation = translate(
        adql,
        reader,
        uploads={},
        maxrec=maxrec,
        max_depth=100,
        qname=lambda given: qualified_name(given, BASE),
    )
    _, rows = ReadOnlyQueries(db).run(translation.sql, 10, translation.limit)
    return rows


def uri(n: int, kind: str = "ent") -> str:
    return f"{NS}{kind}_{n:016x}"


ALICE = Caller("alice")
BOB = Caller("bob")


@pytest.mark.parametrize("table", [t.name for t in PROVENANCE_TABLES])
def test_every_view_runs_and_hides_what_a_reader_may_not_see(db: Database, table: str) -> None:
    everything = run(db, f"SELECT * FROM provenance.{table}")
    alices = run(db, f"SELECT * FROM provenance.{table}", ALICE)
    nobody = run(db, f"SELECT * FROM provenance.{table}", Caller("carol"))
    assert everything and nobody == []
    assert set(alices) <= set(everything)
    assert not any("job_0000000000000005" in str(row) for row in alices), alices


def test_an_invalidation_is_seen_by_who_may_see_its_entity(db: Database) -> None:
    query = "SELECT entity, activity FROM provenance.wasinvalidatedby ORDER BY entity"
    assert run(db, query) == [(uri(3), uri(1, "inval")), (uri(5), uri(2, "inval"))]
    assert run(db, query, ALICE) == [(uri(3), uri(1, "inval"))]
    assert run(db, query, BOB) == [(uri(5), uri(2, "inval"))]
    why = (
        "SELECT a.comment, g.name FROM provenance.wasinvalidatedby AS i"
        " JOIN provenance.activity AS a ON a.id = i.activity"
        " JOIN provenance.wasassociatedwith AS w ON w.activity = a.id"
        " JOIN provenance.agent AS g ON g.id = w.agent"
    )
    assert run(db, why, ALICE) == [("bad", "root")]
    assert run(db, why, Caller("carol")) == []


def test_identifier_comparisons_find_what_uri_comparisons_do(db: Database) -> None:
    by_uri = run(db, f"SELECT name FROM provenance.entity WHERE id = '{uri(2)}'")
    by_qname = run(db, f"SELECT name FROM provenance.entity WHERE id = 'opus:ent_{2:016x}'")
    by_in = run(db, f"SELECT name FROM provenance.entity WHERE id IN ('{uri(2)}', '{uri(3)}')")
    computed = run(db, f"SELECT name FROM provenance.entity WHERE LOWER(id) = LOWER('{uri(2)}')")
    assert by_uri == by_qname == computed == [("f2.txt",)]
    assert sorted(by_in) == [("f2.txt",), ("f3.txt",)]
    joined = run(
        db,
        "SELECT e.name, g.activity FROM provenance.entity AS e "
        "JOIN provenance.wasgeneratedby AS g ON g.entity = e.id ORDER BY e.name",
    )
    assert joined[0] == ("f1.txt", uri(1, "job"))


@pytest.mark.parametrize(
    ("function", "direction"),
    [("find_prov_precursors", "BACK"), ("find_prov_descendants", "FORTH")],
)
@pytest.mark.parametrize("start", [0, 1, 4])
def test_lineage_functions_equal_the_provsap_walk(
    db: Database, function: str, direction: str, start: int
) -> None:
    found = {r[0] for r in run(db, f"SELECT id FROM {function}('{uri(start)}', 20) AS p")}
    with db.read() as conn:
        walked = lineage_query.walk(conn, [f"opus:ent_{start:016x}"], 20, direction)  # type: ignore[arg-type]
    assert found == {NS + w.removeprefix("opus:") for w in walked} - {uri(start)}


def test_lineage_through_a_column_walks_from_every_value(db: Database) -> None:
    rows = run(
        db,
        "SELECT p.origin, COUNT(*) FROM provenance.entity AS e "
        "JOIN find_prov_precursors(e.id, 20) AS p ON p.origin = e.id GROUP BY p.origin",
    )
    counts = dict(rows)
    assert counts[uri(4)] == 8 and counts[uri(1)] == 2 and uri(0) not in counts


def test_lineage_stops_where_the_reader_may_not_see(db: Database) -> None:
    assert run(db, f"SELECT id FROM find_prov_descendants('{uri(0)}', 20) AS d", BOB) == [
        (uri(5, "job"),),
        (uri(5),),
    ] or sorted(
        run(db, f"SELECT id FROM find_prov_descendants('{uri(0)}', 20) AS d", BOB)
    ) == sorted([(uri(5, "job"),), (uri(5),)])


@pytest.mark.parametrize(
    ("adql", "says"),
    [
        ("SELECT * FROM prov_entities", "no table prov_entities"),
        ("SELECT * FROM jobs", "no table jobs"),
        ("SELECT * FROM tokens", "no table tokens"),
        ("SELECT * FROM main.sqlite_master", "no table main.sqlite_master"),
        ("SELECT * FROM information_schema.tables", "no table information_schema.tables"),
        ("SELECT id__q FROM provenance.entity", "id__q"),
        ("SELECT * FROM provenance.entity; SELECT 1", "one SELECT"),
        ("INSERT INTO provenance.entity (id) VALUES ('x')", "only SELECT"),
        (
            "SELECT CONTAINS(POINT('ICRS', 1, 2), CIRCLE('ICRS', 1, 2, 3)) FROM provenance.entity",
            "geometry",
        ),
        ("SELECT sqlite_version() FROM provenance.entity", "SQLITE_VERSION"),
        ("SELECT id FROM find_prov_precursors(1, 2) AS p", "the id must be"),
        ("SELECT id FROM find_prov_precursors('x', 101) AS p", "from 1 to 100"),
        ("SELECT find_prov_precursors('x', 1)", "is a table"),
        ("SELECT", "not valid ADQL"),
    ],
)
def test_what_is_refused_is_said(db: Database, adql: str, says: str) -> None:
    with pytest.raises(AdqlError, match=None) as refused:
        run(db, adql)
    assert says.lower() in str(refused.value).lower(), refused.value


def test_maxrec_fetches_one_row_more(db: Database) -> None:
    assert len(run(db, "SELECT id FROM provenance.entity", maxrec=2)) == 3
    assert len(run(db, "SELECT TOP 1 id FROM provenance.entity", maxrec=2)) == 1


def test_the_connection_cannot_write(db: Database) -> None:
    queries = ReadOnlyQueries(db)
    with pytest.raises(QueryFailed):
        queries.run("DELETE FROM prov_entities", 5, 1)
    with db.read() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT COUNT(*) FROM prov_entities")).scalar() == 6


def test_a_long_query_is_stopped_at_its_limit(db: Database) -> None:
    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
        "SELECT COUNT(*) FROM n"
    )
    with pytest.raises(QueryTimeout):
        ReadOnlyQueries(db).run(slow, 0.3, 1)

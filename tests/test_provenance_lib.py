"""The provenance library on its own: recording, cycle-safe walks, writers equal to prov's."""

from __future__ import annotations

import ast
import json
from datetime import datetime
from pathlib import Path

import prov
import prov.model
import pytest
from sqlalchemy import Connection, create_engine, func, select

from provenance import capture, document, query, store
from provenance.document import to_prov
from provenance.model import Activity, ActivityDescription, Agent, Entity, Parameter
from provenance.serializers import serialize
from tests.servers import ROOT

NOW = datetime(2026, 1, 1, 12, 0, 0)
DESCRIPTION = ActivityDescription("ex:step_1", "step", "1", "test")


def entity(name: str) -> Entity:
    return Entity(f"ex:{name}", name, f"/store/{name}", "text/plain", 3, "0" * 64, NOW, "result")


def activity(name: str, used: list[str], generated: list[str]) -> Activity:
    return Activity(
        f"ex:{name}",
        name,
        DESCRIPTION,
        NOW,
        NOW,
        "COMPLETED",
        'a "quoted"\nmultiline comment',
        parameters=[Parameter("n", "3", "int", description="how many")],
        used=[(entity(u), "input") for u in used],
        generated=[(entity(g), "output") for g in generated],
        agents=[(Agent("ex:ada", "Person", "Ada", email="ada@example.org"), "owner")],
        context={"python": "3.11", "host": "here"},
    )


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'prov.sqlite'}")
    store.metadata.create_all(engine)
    with engine.begin() as conn:
        capture.record(conn, activity("a1", ["raw"], ["mid"]))
        capture.record(conn, activity("a2", ["mid"], ["out"]))
        # a cycle (not a real-world one, but a store may hold it): a3 regenerates raw
        capture.record(conn, activity("a3", ["out"], ["raw"]))
        capture.record(conn, activity("a4", ["out"], ["side"]))
    return engine


def test_walks_are_cycle_safe_and_counted_in_hops(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        assert query.walk(conn, ["ex:out"], 0, "BACK") == {"ex:out"}
        assert query.walk(conn, ["ex:out"], 1, "BACK") == {"ex:out", "ex:a2"}
        assert query.walk(conn, ["ex:out"], 2, "BACK") == {"ex:out", "ex:a2", "ex:mid"}
        everything = query.walk(conn, ["ex:out"], None, "BACK")
        assert everything == {"ex:out", "ex:a2", "ex:mid", "ex:a1", "ex:raw", "ex:a3"}
        forth = query.walk(conn, ["ex:raw"], None, "FORTH")
        assert forth == {
            "ex:raw",
            "ex:a1",
            "ex:mid",
            "ex:a2",
            "ex:out",
            "ex:a3",
            "ex:a4",
            "ex:side",
        }
        assert query.walk(conn, ["ex:out"], 10_000, "BACK") == everything


def test_identical_contexts_are_stored_once(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        contexts = {row.context_id for row in conn.execute(store.activities.select())}
    assert len(contexts - {None}) == 1


def shared_rows(conn: Connection) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        conn.execute(select(func.count()).select_from(table)).scalar_one()
        for table in (store.activity_descriptions, store.contexts, store.agents)
    )


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_shared_rows_stored_once_and_only_when_committed(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Descriptions, contexts and agents are written once per process and database, and
    only a committed write counts: an activity rolled back leaves the next one complete."""
    url = (
        f"sqlite:///{tmp_path / 'prov.sqlite'}"
        if where == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = create_engine(url)
    store.metadata.create_all(engine)
    with engine.connect() as conn:
        with conn.begin() as transaction:
            capture.record(conn, activity("lost", [], ["x"]))
            transaction.rollback()
        with conn.begin():
            capture.record(conn, activity("kept", [], ["y"]))
        with conn.begin():
            capture.record(conn, activity("later", ["y"], ["z"]))
        assert shared_rows(conn) == (1, 2, 1)  # the context has two keys

        # a broken connection (a COMMIT may have been lost with it): written again
        conn.connection.invalidate()
    with engine.begin() as conn:
        for table in (store.activity_descriptions, store.contexts, store.agents):
            conn.execute(table.delete())
    with engine.begin() as conn:
        capture.record(conn, activity("after", ["z"], ["w"]))
        assert shared_rows(conn) == (1, 2, 1)
    engine.dispose()


def test_prov_json_writer_equals_prov(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        chosen = query.select_records(conn, ["ex:raw"], None, "FORTH")
        doc = document.build(conn, chosen, {"ex": "http://example.org/"}, "IVOA")
    body, _ = serialize(doc, "PROV-JSON")
    schema = json.loads(
        (Path(prov.__file__).parent / "tests/schemas/prov-json.schema.json").read_text()
    )
    import jsonschema

    jsonschema.validate(json.loads(body), schema)
    ours = prov.model.ProvDocument.deserialize(content=body.decode(), format="json")
    assert ours == to_prov(doc)
    provn, _ = serialize(doc, "PROV-N")
    assert prov.model.ProvDocument.deserialize(content=provn.decode(), format="provn") == ours


def test_provenance_imports_nothing_from_opus() -> None:
    for path in (ROOT / "provenance").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [n for n in names if n == "opus" or n.startswith("opus.")], path

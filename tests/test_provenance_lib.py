"""The provenance library on its own: recording, cycle-safe walks, writers equal to prov's."""

from __future__ import annotations

import ast
import io
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import prov
import prov.model
import pytest
from lxml import etree
from sqlalchemy import Connection, Engine, String, create_engine, func, literal, select

from provenance import capture, document, query, store
from provenance.document import QName, to_prov
from provenance.model import Activity, ActivityDescription, Agent, Entity, Invalidation, Parameter
from provenance.serializers import serialize
from provenance.serializers.graph import graph_of
from tests.servers import ROOT

pytestmark = pytest.mark.any_database  # the library, on SQLite and on PostgreSQL itself

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


def prov_engine(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> Engine:
    """The provenance tables on a fresh SQLite file or PostgreSQL database."""
    url = (
        f"sqlite:///{tmp_path / 'prov.sqlite'}"
        if where == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = create_engine(url)
    store.metadata.create_all(engine)
    return engine


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_shared_rows_stored_once_and_only_when_committed(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Descriptions, contexts and agents are written once per process and database, and
    only a committed write counts: an activity rolled back leaves the next one complete."""
    engine = prov_engine(where, tmp_path, request)
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


SCHEMAS = Path(prov.__file__).parent / "tests" / "schemas"


def prov_wrote(doc: document.Document, name: str) -> bytes:
    """What prov 3 itself writes of the document (the writers' reference)."""
    if name == "PROV-N":
        return str(to_prov(doc).serialize(format="provn")).encode()
    stream = io.BytesIO()
    to_prov(doc).serialize(stream, format="xml")
    return stream.getvalue()


def odd_document() -> document.Document:
    """Every kind of value and record the writers handle, and names that need escaping."""
    doc = document.Document({"ex": "http://example.org/", "unused": "http://u/"})
    doc.add("entity", "ex:bare", {})
    doc.add(
        "activity",
        "ex:a",
        {"prov:startTime": datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=2)))},
        prov__type=QName("voprov:hidden"),
        prov__label="é ü 中",
        ex__count=3,
        ex__big=2**40,
        ex__huge=2**70,
        ex__ratio=1.5,
        ex__endless=float("inf"),
        ex__flag=True,
        ex__when=datetime(2021, 2, 3, 4, 5, 6),
        ex__text="a\rb&<>\"'\tc\\d",
        ex__lines="two\nlines",
    )
    doc.records.append(
        document.Record(
            "used",
            "ex:u1",
            {"prov:activity": "ex:a"},
            [("prov:role", "r"), ("prov:role", "q"), ("prov:label", "l"), ("prov:role", "r")],
        )
    )
    doc.add("agent", "ex:tool", {}, prov__type=QName("prov:SoftwareAgent"), prov__label="x")
    doc.add("agent", "ex:other", {}, prov__type=QName("ex:Robot"))
    doc.add("entity", "ex:l", {}, prov__location="prov:odd", prov__value="v", prov__type="t")
    doc.add("entity", "ex:dot.", {}, ex__v=float("nan"))
    doc.add("entity", "ex:-odd(x)", {}, ex__v=-(2**63))
    doc.add("wasDerivedFrom", None, {"prov:generatedEntity": "ex:bare", "prov:usedEntity": "ex:l"})
    doc.add(
        "wasInfluencedBy",
        None,
        {"prov:influencee": "ex:a", "prov:influencer": "ex:l"},
        prov__type=QName("voprov:wasConfiguredBy"),
    )
    doc.add("wasAssociatedWith", None, {"prov:activity": "ex:a", "prov:agent": "ex:tool"})
    doc.add("wasGeneratedBy", None, {"prov:entity": "ex:bare"})
    doc.namespaces["voprov"] = "http://www.ivoa.net/documents/ProvenanceDM/ns/voprov/"
    return doc


@pytest.mark.parametrize("name", ["PROV-N", "PROV-XML"])
def test_prov_n_and_prov_xml_writers_write_what_prov_writes(engine, name: str) -> None:  # type: ignore[no-untyped-def]
    """Written directly, byte for byte what prov 3 writes (and so as valid): lineages
    of either model, with stand-ins for hidden records, and odd documents."""
    documents = [odd_document(), document.Document({"ex": "http://example.org/"})]
    with engine.connect() as conn:
        for direction in ("BACK", "FORTH"):
            chosen = query.select_records(conn, ["ex:out"], None, direction)
            chosen.hidden, chosen.direction = {"ex:out": 2}, direction
            for model in ("IVOA", "W3C"):
                documents.append(document.build(conn, chosen, {"ex": "http://e/"}, model))
    for doc in documents:
        assert serialize(doc, name)[0] == prov_wrote(doc, name)


def test_prov_xml_is_valid_and_reads_back_equal(engine) -> None:  # type: ignore[no-untyped-def]
    schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "prov.xsd")))
    with engine.connect() as conn:
        chosen = query.select_records(conn, ["ex:raw"], None, "FORTH")
        doc = document.build(conn, chosen, {"ex": "http://example.org/"}, "IVOA")
    body, content_type = serialize(doc, "PROV-XML")
    assert content_type == "application/xml"
    assert schema.validate(etree.fromstring(body)), schema.error_log
    read = prov.model.ProvDocument.deserialize(content=body.decode(), format="xml")
    assert read == prov.model.ProvDocument.deserialize(
        content=prov_wrote(doc, "PROV-XML").decode(), format="xml"
    )
    strict = prov.model.ProvDocument.deserialize(
        content=serialize(doc, "PROV-N")[0].decode(), format="provn", profile="strict"
    )
    assert strict == to_prov(doc)


@pytest.mark.filterwarnings("ignore:the local part")  # prov says it will refuse such names
def test_names_prov_xml_cannot_hold_as_they_are_go_to_prov() -> None:
    doc = document.Document({"ex": "http://example.org/"})
    doc.records.append(document.Record("entity", "ex:x", {}, [("ex:²bad", "v")]))
    assert serialize(doc, "PROV-XML")[0] == prov_wrote(doc, "PROV-XML")
    assert serialize(doc, "PROV-N")[0] == prov_wrote(doc, "PROV-N")


def test_what_xml_cannot_hold_is_refused() -> None:
    doc = document.Document({"ex": "http://example.org/"})
    doc.add("entity", "ex:x", {}, prov__label="bell\x07")
    for name in ("PROV-XML", "PROV-VOTABLE"):
        with pytest.raises(ValueError, match="XML cannot hold"):
            serialize(doc, name)
    with pytest.raises(ValueError, match="PROV-N cannot write"):
        serialize(document.Document({"ex": "http://a b/"}), "PROV-N")


def test_locations_are_made_absolute_under_the_base_url(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'prov.sqlite'}")
    store.metadata.create_all(engine)
    downloaded = Entity("ex:remote", "remote", "https://elsewhere.org/data.fits")
    step = activity("a1", ["raw"], ["out"])
    step.used.append((downloaded, "input"))
    with engine.begin() as conn:
        capture.record(conn, step)
    with engine.connect() as conn:
        chosen = query.select_records(conn, ["ex:out"], None, "BACK")
        shown = document.build(conn, chosen, {"ex": "https://h/p/prov/"}, "W3C", "https://h/p/")
        kept = document.build(conn, chosen, {"ex": "urn:x:"}, "W3C")

    def locations(doc: document.Document) -> dict[str | None, object]:
        return {r.id: dict(r.attributes).get("prov:location") for r in doc.records if r.id}

    assert locations(shown) == {
        "ex:a1": None,
        "ex:ada": None,
        "ex:raw": "https://h/p/store/raw",
        "ex:out": "https://h/p/store/out",
        "ex:remote": "https://elsewhere.org/data.fits",
    }
    assert locations(kept)["ex:raw"] == "/store/raw"
    assert document.absolute("//cdn.org/x", "https://h") == "//cdn.org/x"
    assert document.absolute(None, "https://h") is None


def test_descriptions_contexts_and_parameters_are_known_by_their_ids(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        context = conn.execute(select(store.activities.c.context_id)).scalars().first()
        ids = ["ex:step_1", context, "ex:a2_par_n", "ex:a2_par_m", "ex:nothing", "ex:a2"]
        assert document.known_artefacts(conn, ids) == {"ex:step_1", context, "ex:a2_par_n"}
        assert document.known_artefacts(conn, ids, lambda c: c == "ex:a1") == {
            "ex:step_1",
            context,
        }
        doc = document.build(conn, query.Selection(), {"ex": "e:"}, "W3C", None, ids[:3])
    shown = {r.id: dict(r.attributes) for r in doc.records}
    assert set(shown) == {"ex:step_1", context, "ex:a2_par_n"}
    assert shown["ex:a2_par_n"]["prov:value"] == "3"
    assert shown["ex:step_1"]["voprov:name"] == "step"
    assert shown[context]["voprov:context_host"] == "here"


def test_an_invalidation_and_a_replacement_in_every_format(tmp_path: Path) -> None:
    """An entity's invalidation (its activity, reason and agent) comes with the entity in
    a walk; every writer writes it as prov 3 does, PROV-XML valid; a re-run says which
    activity it replaces; the drawing strikes the entity through."""
    engine = create_engine(f"sqlite:///{tmp_path / 'prov.sqlite'}")
    store.metadata.create_all(engine)
    again = activity("a2bis", ["mid"], ["out2"])
    again.replaces = "ex:a2"
    root = Agent("ex:root", "Person", "root")
    ended = Invalidation("ex:mid", "ex:inval_1", NOW, 'wrong <flat> & "bias"', root)
    with engine.begin() as conn:
        capture.record(conn, activity("a1", ["raw"], ["mid"]))
        capture.record(conn, activity("a2", ["mid"], ["out"]))
        capture.record(conn, again)
        assert capture.invalidate(conn, ended)
        assert not capture.invalidate(conn, ended)  # an entity ends once
    with engine.connect() as conn:
        chosen = query.select_records(conn, ["ex:raw"], None, "FORTH")
        assert "ex:inval_1" in chosen.activities and "ex:root" in chosen.agents
        job = query.activity_records(conn, "ex:a1")
        assert "ex:inval_1" in job.activities  # the invalidation of what it generated
        doc = document.build(conn, chosen, {"ex": "http://example.org/"}, "IVOA")
    [invalidated] = [r for r in doc.records if r.kind == "wasInvalidatedBy"]
    assert invalidated.formal == {"prov:entity": "ex:mid", "prov:activity": "ex:inval_1",
                                  "prov:time": NOW}  # fmt: skip
    shown = {r.id: dict(r.attributes) for r in doc.records if r.id}
    assert shown["ex:inval_1"]["voprov:comment"] == ended.reason
    assert shown["ex:a2bis"]["voprov:replaces"] == QName("ex:a2")
    for name in ("PROV-N", "PROV-XML"):
        assert serialize(doc, name)[0] == prov_wrote(doc, name)
    body = serialize(doc, "PROV-JSON")[0]
    import jsonschema

    schema = json.loads((SCHEMAS / "prov-json.schema.json").read_text())
    jsonschema.validate(json.loads(body), schema)
    [written] = json.loads(body)["wasInvalidatedBy"].values()
    assert written == {"prov:entity": "ex:mid", "prov:activity": "ex:inval_1",
                       "prov:time": NOW.isoformat()}  # fmt: skip
    assert prov.model.ProvDocument.deserialize(content=body.decode(), format="json") == to_prov(doc)
    provn = serialize(doc, "PROV-N")[0].decode()
    assert "wasInvalidatedBy(ex:mid, ex:inval_1, 2026-01-01T12:00:00)" in provn
    xsd = etree.XMLSchema(etree.parse(str(SCHEMAS / "prov.xsd")))
    assert xsd.validate(etree.fromstring(serialize(doc, "PROV-XML")[0])), xsd.error_log
    votable = etree.fromstring(serialize(doc, "PROV-VOTABLE")[0])
    ns = {"v": "http://www.ivoa.net/xml/VOTable/v1.3"}
    [table] = votable.iterfind(".//v:TABLE[@name='WasInvalidatedBy']", ns)
    assert [td.text for td in table.iterfind(".//v:TD", ns)] == [
        "ex:mid",
        "ex:inval_1",
        NOW.isoformat(),
    ]
    graph = graph_of(doc)
    assert graph.nodes["ex:mid"].invalidated and "ex:inval_1" not in graph.nodes
    assert any(ended.reason in line for line in graph.nodes["ex:mid"].tooltip)
    if shutil.which("dot"):
        svg = serialize(doc, "PROV-SVG")[0]
        assert b'class="node entity invalidated"' in svg and b"line-through" in svg
        assert b"<flat>" not in svg  # the reason is text, never markup
    engine.dispose()


def test_downstream_is_in_dependency_order(tmp_path: Path) -> None:
    """raw -> a -> x; x -> b -> y, x -> c -> z (fan-out); y + z -> d -> w (fan-in)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'prov.sqlite'}")
    store.metadata.create_all(engine)
    with engine.begin() as conn:
        for name, used, generated in (
            ("d", ["y", "z"], ["w"]),  # recorded first: the order comes from the lineage
            ("c", ["x"], ["z"]),
            ("b", ["x"], ["y"]),
            ("a", ["raw"], ["x"]),
        ):
            capture.record(conn, activity(name, used, generated))
    with engine.connect() as conn:
        found = query.downstream(conn, ["ex:x"])
        assert query.downstream(conn, ["ex:w"]) == query.Downstream()
    assert found.activities == ["ex:b", "ex:c", "ex:d"]
    assert found.entities == ["ex:y", "ex:z", "ex:w"]
    assert found.informed_by == {"ex:b": set(), "ex:c": set(), "ex:d": {"ex:b", "ex:c"}}
    engine.dispose()


def schedule_runs(conn: Connection) -> None:
    """Three runs of a schedule, each informed by the one before and naming its schedule;
    run 3 also used run 1's result (a communication PROV would infer, not recorded)."""
    for n, used in ((1, []), (2, []), (3, ["o1"])):
        run = activity(f"run{n}", used, [f"o{n}"])
        run.informed_by = [f"ex:run{n - 1}"] if n > 1 else []
        run.attributes = {"ex:schedule": "s1"}
        capture.record(conn, run)


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_communications_are_shown_never_walked(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A walk follows what was used and generated, never a communication (a schedule's
    runs carry no data from one to the next: a walk BACK from a run's result must not
    reach every earlier run); the re-run's walk (downstream) neither; a job's own
    document has its communications, within the reader's visibility."""
    engine = prov_engine(where, tmp_path, request)
    with engine.begin() as conn:
        schedule_runs(conn)
    with engine.connect() as conn:
        assert query.walk(conn, ["ex:o2"], None, "BACK") == {"ex:o2", "ex:run2"}
        assert query.walk(conn, ["ex:run1"], None, "FORTH") == {
            "ex:run1", "ex:o1", "ex:run3", "ex:o3"
        }  # fmt: skip
        seeds = select(
            literal("ex:o3", String).label("origin"), literal("ex:o3", String).label("node")
        )
        found = query.lineage(seeds, 10, "BACK")
        steps = {
            (node, depth, relation)
            for node, depth, relation in conn.execute(
                select(found.c.node, found.c.depth, found.c.relation).where(found.c.depth > 0)
            )
        }
        assert steps == {
            ("ex:run3", 1, "wasGeneratedBy"),
            ("ex:o1", 2, "used"),
            ("ex:run1", 3, "wasGeneratedBy"),
        }
        # re-running what was made from o1 re-runs run3 (it used o1), not what run1 informed
        assert query.downstream(conn, ["ex:o1"]).activities == ["ex:run3"]
        job = query.activity_records(conn, "ex:run2")
        assert {"ex:run1", "ex:run3"} <= job.activities
        hidden_run1 = query.activity_records(conn, "ex:run2", True, hiding("ex:run1"))
        assert "ex:run1" not in hidden_run1.activities
    engine.dispose()


def hiding(activity_id: str) -> query.Allowed:
    """A reader who may see everything but one activity."""
    return lambda column: column != activity_id


def test_a_communication_and_an_attribute_in_every_format(tmp_path: Path) -> None:
    """wasInformedBy between the activities shown and an activity's own attribute: every
    writer writes them as prov 3 does, PROV-XML valid, a VOTable table and column, a
    dashed labelled edge in the drawing."""
    engine = create_engine(f"sqlite:///{tmp_path / 'prov.sqlite'}")
    store.metadata.create_all(engine)
    with engine.begin() as conn:
        schedule_runs(conn)
    with engine.connect() as conn:
        # run 2's own document, for a reader who may not see run 3
        chosen = query.activity_records(conn, "ex:run2", True, hiding("ex:run3"))
        doc = document.build(conn, chosen, {"ex": "http://example.org/"}, "IVOA")
        job = document.build(conn, query.activity_records(conn, "ex:run3"), {"ex": "e:"}, "W3C")
    engine.dispose()
    [informed] = [r for r in doc.records if r.kind == "wasInformedBy"]
    assert informed.formal == {"prov:informed": "ex:run2", "prov:informant": "ex:run1"}
    told = {(r.formal["prov:informed"], r.formal["prov:informant"])
            for r in job.records if r.kind == "wasInformedBy"}  # fmt: skip
    assert told == {("ex:run3", "ex:run2")}  # o1's maker is shown, but only run2 was told
    shown = {r.id: dict(r.attributes) for r in doc.records if r.id}
    assert shown["ex:run2"]["ex:schedule"] == "s1"
    for name in ("PROV-N", "PROV-XML"):
        assert serialize(doc, name)[0] == prov_wrote(doc, name)
    body = serialize(doc, "PROV-JSON")[0]
    import jsonschema

    jsonschema.validate(
        json.loads(body), json.loads((SCHEMAS / "prov-json.schema.json").read_text())
    )
    written = json.loads(body)
    assert list(written["wasInformedBy"].values()) == [
        {"prov:informed": "ex:run2", "prov:informant": "ex:run1"}
    ]
    assert written["activity"]["ex:run2"]["ex:schedule"] == "s1"
    assert prov.model.ProvDocument.deserialize(content=body.decode(), format="json") == to_prov(doc)
    provn = serialize(doc, "PROV-N")[0].decode()
    assert "wasInformedBy(ex:run2, ex:run1)" in provn and 'ex:schedule="s1"' in provn
    xml = etree.fromstring(serialize(doc, "PROV-XML")[0])
    xsd = etree.XMLSchema(etree.parse(str(SCHEMAS / "prov.xsd")))
    assert xsd.validate(xml), xsd.error_log
    p = {"prov": "http://www.w3.org/ns/prov#", "ex": "http://example.org/"}
    [element] = xml.iterfind("prov:wasInformedBy", p)
    refs = [(child.tag.rpartition("}")[2], child.get(f"{{{p['prov']}}}ref")) for child in element]
    assert refs == [("informed", "ex:run2"), ("informant", "ex:run1")]
    assert xml.findtext("prov:activity[@prov:id='ex:run2']/ex:schedule", None, p) == "s1"
    votable = etree.fromstring(serialize(doc, "PROV-VOTABLE")[0])
    ns = {"v": "http://www.ivoa.net/xml/VOTable/v1.3"}
    [table] = votable.iterfind(".//v:TABLE[@name='WasInformedBy']", ns)
    assert [td.text for td in table.iterfind(".//v:TD", ns)] == ["ex:run2", "ex:run1"]
    [activities] = votable.iterfind(".//v:TABLE[@name='Activity']", ns)
    names = [f.get("name") for f in activities.iterfind("v:FIELD", ns)]
    assert names[-1] == "ex:schedule"
    assert {tr[-1].text for tr in activities.iterfind(".//v:TR", ns)} == {"s1"}
    graph = graph_of(doc)
    [edge] = [e for e in graph.edges if e.kind == "wasInformedBy"]
    assert (edge.tail, edge.head) == ("ex:run1", "ex:run2")  # time flows left to right
    assert any(line == "ex:schedule = s1" for line in graph.nodes["ex:run2"].tooltip)
    if shutil.which("dot"):
        svg = serialize(doc, "PROV-SVG")[0]
        assert b'class="edge wasInformedBy"' in svg and b">wasInformedBy</text>" in svg
        assert b"stroke-dasharray" in svg

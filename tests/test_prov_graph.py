"""PROV-SVG read as a reader sees it: a 20-job alert pipeline's lineage on one screen,
time flowing left to right, attributes in tooltips, agents only when asked for, nothing
of a record's text turned into markup (the provenance library alone, no server)."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine

from provenance import capture, document, query, store
from provenance.model import Activity, ActivityDescription, Agent, Entity, Parameter
from provenance.serializers import GraphTooLarge, serialize
from provenance.serializers.graph import graph_of, to_svg

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"
NAMESPACES = {"ex": "http://example.org/prov/"}
SCREEN = (1920, 1080)  # px
TRICKY = '<b onclick="x">x & "q" \\N'


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """A tiered pipeline of 20 jobs: 12 T0 ingests, 4 T1 combinations of three, 3 T2
    computations, one T3 reaction over all T2 results."""
    made = create_engine("sqlite://")
    store.metadata.create_all(made)
    start = datetime(2026, 12, 3, 12, 0, 0)
    ada = Agent("ex:ada", "Person", "Ada")
    steps: list[Activity] = []

    def job(tier: str, n: int, used: list[Entity]) -> Entity:
        output = Entity(f"ex:{tier}_{n}_out", f"{tier}_{n}.json", location=f"/store/{tier}{n}")
        steps.append(
            Activity(
                f"ex:job_{tier}_{n}",
                tier,
                ActivityDescription(f"ex:{tier}", tier, version="1.0"),
                start_time=start + timedelta(minutes=len(steps)),
                end_time=start + timedelta(minutes=len(steps) + 1),
                status="COMPLETED",
                parameters=[Parameter("threshold", str(n), "float", unit="mag")],
                used=[(e, "input") for e in used],
                generated=[(output, "output")],
                agents=[(ada, "owner")],
            )
        )
        return output

    alerts = [Entity(f"ex:alert_{i}", f"ZTF_alert_{i}.avro") for i in range(12)]
    alerts[0] = Entity("ex:alert_0", TRICKY)
    datapoints = [job("t0", i, [alert]) for i, alert in enumerate(alerts)]
    states = [job("t1", i, datapoints[3 * i : 3 * i + 3]) for i in range(4)]
    computed = [job("t2", 0, states[:2]), job("t2", 1, states[2:3]), job("t2", 2, states[3:])]
    job("t3", 0, computed)
    with made.begin() as conn:
        for step in steps:
            capture.record(conn, step)
    yield made
    made.dispose()


def lineage(engine: Engine, agents: bool = False) -> document.Document:
    with engine.connect() as conn:
        chosen = query.select_records(conn, ["ex:t3_0_out"], None, "BACK", agents)
        return document.build(conn, chosen, NAMESPACES, "IVOA")


def drawing(engine: Engine, agents: bool = False) -> ET.Element:
    if not shutil.which("dot"):
        pytest.skip("no dot (graphviz) on PATH")
    body, content_type = serialize(lineage(engine, agents), "PROV-SVG")
    assert content_type == "image/svg+xml"
    return ET.fromstring(body)


def nodes(svg: ET.Element, kind: str) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if g.get("class") == f"node {kind}"]


def title(group: ET.Element) -> str:
    found = group.find(f"{SVG}title")
    assert found is not None and found.text is not None
    return found.text


def centre_x(group: ET.Element) -> float:
    ellipse = group.find(f".//{SVG}ellipse")
    if ellipse is not None:
        return float(ellipse.get("cx", "0"))
    polygon = group.find(f".//{SVG}polygon")
    assert polygon is not None
    xs = [float(p.split(",")[0]) for p in polygon.get("points", "").split()]
    return (min(xs) + max(xs)) / 2


def test_a_20_job_pipeline_fits_one_screen_and_stays_legible(engine: Engine) -> None:
    svg = drawing(engine)
    width, height = (
        float(svg.get(side, "0").removesuffix("pt")) * 4 / 3 for side in ("width", "height")
    )
    assert width <= SCREEN[0] and height <= SCREEN[1], (width, height)
    sizes = {float(t.get("font-size", "0")) for t in svg.iter(f"{SVG}text")}
    assert sizes and min(sizes) >= 11, sizes  # drawn at its size, not shrunk to fit
    assert len(nodes(svg, "activity")) == 20
    assert len(nodes(svg, "entity")) == 12 + 20  # the alerts and each job's result
    # the IVOA model's descriptions and parameters are in tooltips, not boxes of their own
    assert not nodes(svg, "agent")
    t3 = next(g for g in nodes(svg, "activity") if "ex:job_t3_0" in title(g))
    assert "parameter threshold = 0 [mag]" in title(t3)
    assert "described by t3 1.0" in title(t3)
    assert "prov:startTime = 2026-12-03T12:19:00" in title(t3)


def test_time_flows_left_to_right(engine: Engine) -> None:
    svg = drawing(engine)
    x = {title(g).split("\n")[0].split()[1]: centre_x(g) for g in nodes(svg, "entity")}
    x |= {title(g).split("\n")[0].split()[1]: centre_x(g) for g in nodes(svg, "activity")}
    edges = [g for g in svg.iter(f"{SVG}g") if (g.get("class") or "").startswith("edge ")]
    assert edges
    for edge in edges:
        if edge.get("class") == "edge used":  # "<activity> used <entity> (role input)"
            activity, _, entity = title(edge).split()[:3]
            assert x[entity] < x[activity], title(edge)
        elif edge.get("class") == "edge wasGeneratedBy":
            entity, _, activity = title(edge).split()[:3]
            assert x[activity] < x[entity], title(edge)


def test_attributes_are_tooltips_and_nodes_link_to_their_records(engine: Engine) -> None:
    svg = drawing(engine)
    out = next(g for g in nodes(svg, "entity") if "ex:t3_0_out" in title(g))
    assert "prov:location = /store/t30" in title(out)
    anchor = out.find(f".//{SVG}a")
    assert anchor is not None
    assert anchor.get(f"{XLINK}href") == "http://example.org/prov/t3_0_out"
    assert anchor.get(f"{XLINK}title") is None  # the <title> is the tooltip
    # only labels are drawn: no attribute text on the canvas
    drawn = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    assert "prov:location" not in drawn and "t3_0.json" in drawn


def test_a_records_text_is_shown_never_run(engine: Engine) -> None:
    svg = drawing(engine)
    drawn = [t.text for t in svg.iter(f"{SVG}text")]
    assert TRICKY in drawn  # exactly as recorded: & not read as an entity, \N not expanded
    assert not list(svg.iter(f"{SVG}b")) and not list(svg.iter("b"))


def test_agents_are_drawn_on_demand(engine: Engine) -> None:
    svg = drawing(engine, agents=True)
    (ada,) = nodes(svg, "agent")
    assert "prov:label = Ada" in title(ada)
    assert re.search(r"<polygon[^>]*>", ET.tostring(ada, encoding="unicode"))  # a house


def test_derivations_told_by_an_activity_are_not_drawn_twice(engine: Engine) -> None:
    doc = lineage(engine)
    doc.add(
        "wasDerivedFrom",
        None,
        {"prov:generatedEntity": "ex:t0_0_out", "prov:usedEntity": "ex:alert_0"},
    )
    doc.add(
        "wasDerivedFrom",
        None,
        {"prov:generatedEntity": "ex:t3_0_out", "prov:usedEntity": "ex:alert_5"},
    )
    kinds = [(e.kind, e.tail, e.head) for e in graph_of(doc).edges if e.kind == "wasDerivedFrom"]
    assert kinds == [("wasDerivedFrom", "ex:alert_5", "ex:t3_0_out")]


def test_too_large_a_graph_is_refused_before_it_is_laid_out() -> None:
    doc = document.Document(dict(NAMESPACES))
    for i in range(2001):
        doc.add("entity", f"ex:e{i}", {}, prov__label=f"e{i}")
    with pytest.raises(GraphTooLarge, match="DEPTH"):
        to_svg(doc)


def test_long_names_keep_the_part_that_tells_them_apart() -> None:
    doc = document.Document(dict(NAMESPACES))
    for n in ("023559", "023592"):
        name = f"hess-dl3-dr1/data/hess_dl3_dr1_obs_id_{n}.fits.gz[EVENTS]"
        doc.add("entity", f"ex:{n}", {}, prov__label=name)
    svg = ET.fromstring(to_svg(doc))
    drawn = sorted(t.text or "" for t in svg.iter(f"{SVG}text"))
    assert len(set(drawn)) == 2 and all(
        n in d for n, d in zip(("023559", "023592"), drawn, strict=True)
    )
    assert all(len(d) <= 32 and "/" not in d for d in drawn), drawn

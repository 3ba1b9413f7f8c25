"""A lineage for a page: the graph drawn (the same drawing as PROV-SVG, its nodes linking
to the pages of this server) and the same lineage as a table, step by step (for screen
readers and for copying)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from markupsafe import Markup

from provenance.document import Document, Record
from provenance.serializers import FormatUnavailable
from provenance.serializers.graph import Graph, Node, graph_of, to_svg

# more than this and a page shows the table only (PROV-SVG still draws up to its limit)
PAGE_NODES = 400


@dataclass
class Step:
    """An activity with what it used and generated (and who ran it, where asked)."""

    activity: Node
    started: str = ""
    used: list[tuple[Node, str]] = field(default_factory=list)  # (entity, role)
    generated: list[tuple[Node, str]] = field(default_factory=list)
    agents: list[tuple[Node, str]] = field(default_factory=list)


@dataclass
class Lineage:
    steps: list[Step]
    drawing: Markup | None  # the inline SVG
    why_not_drawn: str  # where there is no drawing
    hidden: int  # records the reader may not see


def page_link(qname: str) -> str | None:
    """The page of an `opus:` record: an entity's page, a job's page; others have none."""
    prefix, _, local = qname.partition(":")
    if prefix != "opus":
        return None
    if local.startswith("ent_"):
        return "/entities/" + local.removeprefix("ent_")
    if local.startswith("job_"):
        return "/jobs/" + local.removeprefix("job_")
    return None


def merged(first: Document, second: Document) -> Document:
    """One document with the records of both (the lineage up and down of an entity)."""
    out = Document(first.namespaces | second.namespaces, hidden=first.hidden + second.hidden)
    seen: set[object] = set()
    for record in [*first.records, *second.records]:
        key = record.id or (record.kind, tuple(sorted(map(str, record.formal.items()))))
        if key not in seen:
            seen.add(key)
            out.records.append(record)
    return out


def _steps(graph: Graph) -> list[Step]:
    steps = {n.id: Step(n) for n in graph.nodes.values() if n.kind == "activity"}
    for edge in graph.edges:
        tail, head = graph.nodes[edge.tail], graph.nodes[edge.head]
        if edge.kind == "used" and head.id in steps:
            steps[head.id].used.append((tail, edge.role))
        elif edge.kind == "wasGeneratedBy" and tail.id in steps:
            steps[tail.id].generated.append((head, edge.role))
        elif edge.kind == "wasAssociatedWith" and head.id in steps:
            steps[head.id].agents.append((tail, edge.role))
    return list(steps.values())


def _start(record: Record) -> str:
    started = record.formal.get("prov:startTime")
    return started.isoformat(timespec="seconds") if isinstance(started, datetime) else ""


def steps(doc: Document, graph: Graph | None = None) -> list[Step]:
    """The activities of a document with what each used and generated, oldest first."""
    graph = graph or graph_of(doc)
    starts = {r.id: _start(r) for r in doc.records if r.kind == "activity"}
    found = _steps(graph)
    for step in found:
        step.started = starts.get(step.activity.id, "")
    return sorted(found, key=lambda s: (s.started, s.activity.id))


def lineage(doc: Document) -> Lineage:
    """The page's drawing and table of a document."""
    graph = graph_of(doc)
    drawing, why = None, ""
    if len(graph.nodes) > PAGE_NODES:
        why = f"{len(graph.nodes)} records are too many to draw here: the table lists them"
    elif graph.nodes:
        try:
            svg = to_svg(doc, page_link, graph).decode()
            drawing = Markup(svg[svg.index("<svg") :])  # an SVG tree serialized: escaped
        except FormatUnavailable as exc:
            why = str(exc)
    return Lineage(steps(doc, graph), drawing, why, doc.hidden)

"""PROV-SVG: the lineage as a layered left-to-right graph, laid out by graphviz's `dot`.

Entities (yellow ellipses), activities (blue boxes) and agents (orange houses) in PROV's
shapes and colours. Time flows left to right: an entity before the activity that used
it, a result after the activity that made it; each arrow still points as PROV says, from
the later record to the earlier one. Nodes carry a short label; every attribute is in
the node's tooltip (its SVG ``<title>``), not in note boxes. The IVOA model's
description, parameters and context of an activity fold into that activity's tooltip.
Agents are drawn when the document holds them (ProvSAP leaves them out of a PROV-SVG
unless asked: ``AGENT=YES``). A derivation already told by an activity that used the one
entity and generated the other is not drawn again. An invalidated entity is drawn struck
through and outlined in red, its invalidation (when, why, by whom) in its tooltip. A
communication is a dashed edge from activity to activity labelled wasInformedBy, as
prov's own drawing labels it.

The DOT text names nodes ``n1``, ``n2``…: what a record says reaches the drawing only
as escaped label text and as tooltips set afterwards through an XML tree, so nothing of
it can become markup.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provenance.document import Document, Record

__all__ = [
    "FormatUnavailable",
    "Graph",
    "GraphTooLarge",
    "GraphvizMissing",
    "graph_of",
    "to_svg",
]

SVG = "http://www.w3.org/2000/svg"
XLINK = "http://www.w3.org/1999/xlink"
ET.register_namespace("", SVG)
ET.register_namespace("xlink", XLINK)

MAX_NODES = 2000  # beyond this dot takes minutes and no screen shows the drawing
LABEL_CHARS = 32
DOT_SECONDS = 60
ARTEFACTS = {"voprov:ActivityDescription", "voprov:Parameter", "voprov:Context"}
STYLE = {
    "entity": 'shape=ellipse, style=filled, fillcolor="#FFFC87", color="#808080"',
    "activity": 'shape=box, style=filled, fillcolor="#9FB1FC", color="#0000FF"',
    "agent": 'shape=house, style=filled, fillcolor="#FED37F", color="#808080"',
    "hidden": 'shape=box, style="dashed,filled", fillcolor="#EEEEEE", color="#808080"',
}
INVALIDATED = 'shape=ellipse, style=filled, fillcolor="#FFFC87", color="#D00000", penwidth=2.5'

EDGE_STYLE = {
    "used": 'color="#555555"',
    "wasGeneratedBy": 'color="#1B6B2B"',
    "wasAssociatedWith": 'color="#B06000", style=dashed',
    "wasDerivedFrom": 'color="#999999", style=dashed, constraint=false',
    "wasInfluencedBy": 'color="#999999", style=dotted',
    "wasInformedBy": 'color="#0000FF", style=dashed, label="wasInformedBy", fontsize=10,'
    ' fontcolor="#0000FF", fontname="Helvetica,Arial,sans-serif"',
}


class FormatUnavailable(Exception):
    """A format cannot be written here: a program it needs is missing, or the document
    cannot be drawn. The message says why."""


class GraphvizMissing(FormatUnavailable):
    """The `dot` program of graphviz is not installed: no SVG can be drawn."""


class GraphTooLarge(FormatUnavailable):
    """More records than a drawing can show: ask for fewer (a smaller depth)."""


@dataclass
class Node:
    key: str  # n1, n2…: its name in DOT and its id in the SVG
    id: str  # the record's qualified name
    kind: str  # entity, activity, agent, hidden
    label: str  # prov:label, else the id
    tooltip: list[str] = field(default_factory=list)
    invalidated: bool = False  # an entity whose invalidation the document holds


@dataclass
class Edge:
    key: str
    kind: str
    tail: str  # the node drawn on the left (the earlier record)
    head: str
    tooltip: str
    role: str = ""


@dataclass
class Graph:
    """What the drawing shows: nodes and edges, time flowing from tail to head."""

    nodes: dict[str, Node]  # by qualified name
    edges: list[Edge]


def _text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _attributes(record: Record) -> list[str]:
    return [f"{name} = {_text(value)}" for name, value in record.attributes]


def _short(text: str) -> str:
    """A label for the drawing: a path's last part, and of a long name its end (files of
    one folder differ there)."""
    text = " ".join(text.split())
    if "/" in text.rstrip("/") and "://" not in text:
        text = text.rstrip("/").rsplit("/", 1)[1]
    return text if len(text) <= LABEL_CHARS else "…" + text[-(LABEL_CHARS - 1) :]


def graph_of(doc: Document) -> Graph:
    """The nodes and edges of a document's drawing (also what a page lists as text)."""
    attributes = {r.id: dict(r.attributes) for r in doc.records if r.id is not None}
    artefacts = {i for i, a in attributes.items() if str(a.get("prov:type", "")) in ARTEFACTS}
    ended = _invalidations(doc, attributes)
    invalidators = {activity for activity, _ in ended.values()}
    nodes: dict[str, Node] = {}
    for record in doc.records:
        if record.kind not in ("entity", "activity", "agent") or record.id is None:
            continue
        if record.id in artefacts or record.id in invalidators:
            continue
        values = attributes[record.id]
        hidden = str(values.get("prov:type", "")) == "voprov:hidden"
        kind = "hidden" if hidden else record.kind
        label = str(values.get("prov:label") or record.id)
        tooltip = [f"{record.kind} {record.id}"]
        if record.kind == "activity":
            tooltip += [f"{name} = {_text(value)}" for name, value in record.formal.items()]
        tooltip += _attributes(record)
        node = Node(f"n{len(nodes) + 1}", record.id, kind, label, tooltip)
        if record.id in ended and record.kind == "entity":
            node.invalidated = True
            node.tooltip.append(ended[record.id][1])
        nodes[record.id] = node
    edges: list[Edge] = []
    makers: dict[str, set[str]] = {}  # entity -> the activities that generated it
    used = set()  # (activity, entity)
    for r in doc.records:
        if r.kind == "wasGeneratedBy":
            makers.setdefault(r.formal["prov:entity"], set()).add(r.formal["prov:activity"])
        elif r.kind == "used":
            used.add((r.formal["prov:activity"], r.formal["prov:entity"]))

    def told_by_an_activity(generated: str, source: str) -> bool:
        return any((a, source) in used for a in makers.get(generated, ()))

    for record in doc.records:
        f = record.formal
        role = dict(record.attributes).get("prov:role")
        where = f" (role {role})" if role else ""
        if record.kind == "used":
            tail, head = f["prov:entity"], f["prov:activity"]
            text = f"{head} used {tail}{where}"
        elif record.kind == "wasGeneratedBy":
            tail, head = f["prov:activity"], f["prov:entity"]
            text = f"{head} wasGeneratedBy {tail}{where}"
        elif record.kind == "wasAssociatedWith":
            tail, head = f["prov:agent"], f["prov:activity"]
            text = f"{head} wasAssociatedWith {tail}{where}"
        elif record.kind == "wasDerivedFrom":
            tail, head = f["prov:usedEntity"], f["prov:generatedEntity"]
            if told_by_an_activity(head, tail):
                continue
            text = f"{head} wasDerivedFrom {tail}"
        elif record.kind == "wasInfluencedBy":
            tail, head = f["prov:influencer"], f["prov:influencee"]
            if tail in artefacts and head in nodes:
                nodes[head].tooltip += _folded(tail, attributes[tail])
                continue
            text = f"{head} wasInfluencedBy {tail}"
        elif record.kind == "wasInformedBy":
            tail, head = f["prov:informant"], f["prov:informed"]
            text = f"{head} wasInformedBy {tail}"
        else:
            continue
        if tail in nodes and head in nodes:
            key = f"e{len(edges) + 1}"
            edges.append(Edge(key, record.kind, tail, head, text, str(role or "")))
    return Graph(nodes, edges)


def _invalidations(
    doc: Document, attributes: dict[str, dict[str, Any]]
) -> dict[str, tuple[str, str]]:
    """Invalidated entity -> (its invalidation activity, a line saying when, why, by whom)."""
    agents: dict[str, list[str]] = {}
    for r in doc.records:
        if r.kind == "wasAssociatedWith":
            agent = r.formal["prov:agent"]
            label = attributes.get(agent, {}).get("prov:label") or agent
            agents.setdefault(r.formal["prov:activity"], []).append(str(label))
    ended = {}
    for r in doc.records:
        if r.kind != "wasInvalidatedBy":
            continue
        activity = r.formal.get("prov:activity")
        if activity is None:
            continue
        when = r.formal.get("prov:time")
        line = "INVALIDATED" + (f" at {_text(when)}" if when is not None else "")
        if agents.get(activity):
            line += f" by {', '.join(agents[activity])}"
        reason = attributes.get(activity, {}).get("voprov:comment")
        line += f" ({activity})" + (f": {reason}" if reason else "")
        ended[r.formal["prov:entity"]] = (activity, line)
    return ended


def _folded(artefact: str, values: dict[str, Any]) -> list[str]:
    """A description, parameter or context as lines of its activity's tooltip."""
    kind = str(values.get("prov:type", "")).removeprefix("voprov:")
    if kind == "Parameter":
        unit = f" [{values['voprov:unit']}]" if values.get("voprov:unit") else ""
        return [f"parameter {values.get('voprov:name')} = {values.get('prov:value')}{unit}"]
    if kind == "ActivityDescription":
        version = f" {values['voprov:version']}" if values.get("voprov:version") else ""
        return [f"described by {values.get('voprov:name')}{version} ({artefact})"]
    return [
        f"context {name.removeprefix('voprov:context_')} = {_text(value)}"
        for name, value in values.items()
        if name != "prov:type"
    ]


def _dot_string(text: str) -> str:
    """A DOT quoted string showing `text` as it is (graphviz reads & as an entity and
    backslashes as escapes in labels)."""
    text = text.replace("&", "&amp;").replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", " ") + '"'


def _html_text(text: str) -> str:
    """Text inside a DOT HTML-like label, shown as it is (never markup)."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _dot(graph: Graph, link: Callable[[str], str | None]) -> str:
    lines = [
        "digraph lineage {",
        "  rankdir=LR; ranksep=0.3; nodesep=0.12; bgcolor=transparent;",
        '  node [fontname="Helvetica,Arial,sans-serif", fontsize=11, height=0.3,',
        '        margin="0.08,0.03"];',
        "  edge [arrowsize=0.6, penwidth=1.1, dir=back];",
    ]
    for node in graph.nodes.values():
        url = link(node.id) if node.kind != "hidden" else None
        target = f', URL={_dot_string(url)}, target="_top"' if url else ""
        label, style = _dot_string(_short(node.label)), STYLE[node.kind]
        if node.invalidated:  # struck through: an HTML-like label, its text escaped
            label, style = f"<<S>{_html_text(_short(node.label))}</S>>", INVALIDATED
        lines.append(f"  {node.key} [id={node.key}, label={label}, {style}{target}];")
    for edge in graph.edges:
        tail, head = graph.nodes[edge.tail].key, graph.nodes[edge.head].key
        lines.append(f"  {tail} -> {head} [id={edge.key}, {EDGE_STYLE[edge.kind]}];")
    lines.append("}")
    return "\n".join(lines)


def _expand(namespaces: dict[str, str]) -> Callable[[str], str | None]:
    def link(qname: str) -> str | None:
        prefix, _, local = qname.partition(":")
        return namespaces[prefix] + local if prefix in namespaces and local else None

    return link


def to_svg(
    doc: Document, link: Callable[[str], str | None] | None = None, graph: Graph | None = None
) -> bytes:
    """Draw the document as an SVG graph.

    Args:
        doc: The provenance document.
        link: Where a node's record leads (its qualified name -> a URL, or None for no
            link). Default: the URI the qualified name stands for.
        graph: The document's `graph_of`, where the caller has it already.

    Returns:
        The SVG image.

    Raises:
        GraphvizMissing: The ``dot`` program of graphviz is not on PATH.
        GraphTooLarge: More than MAX_NODES records to draw.
        FormatUnavailable: dot failed or took too long.
    """
    graph = graph or graph_of(doc)
    if len(graph.nodes) > MAX_NODES:
        raise GraphTooLarge(
            f"{len(graph.nodes)} records are too many to draw (at most {MAX_NODES}):"
            " ask for a smaller DEPTH"
        )
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissing("PROV-SVG needs the dot program of graphviz, not found on PATH")
    text = _dot(graph, link or _expand(doc.namespaces))
    try:
        done = subprocess.run(
            [dot, "-Tsvg"], input=text.encode(), capture_output=True, timeout=DOT_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise FormatUnavailable(f"dot took more than {DOT_SECONDS} s to draw the graph") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise FormatUnavailable(f"dot failed: {' '.join(message) or done.returncode}")
    return _with_tooltips(done.stdout, graph)


def _with_tooltips(svg: bytes, graph: Graph) -> bytes:
    """Each node's and edge's `<title>` made its tooltip; classes for style sheets."""
    root = ET.fromstring(svg)
    nodes = {n.key: n for n in graph.nodes.values()}
    edges = {e.key: e for e in graph.edges}
    for group in root.iter(f"{{{SVG}}}g"):
        key = group.get("id", "")
        title = group.find(f"{{{SVG}}}title")
        if key in nodes:
            ended = " invalidated" if nodes[key].invalidated else ""
            group.set("class", f"node {nodes[key].kind}{ended}")
            tooltip = "\n".join(nodes[key].tooltip)
        elif key in edges:
            group.set("class", f"edge {edges[key].kind}")
            tooltip = edges[key].tooltip
        else:
            continue
        if title is not None:
            title.text = tooltip
        for anchor in group.iter(f"{{{SVG}}}a"):
            anchor.attrib.pop(f"{{{XLINK}}}title", None)
    result: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return result

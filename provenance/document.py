"""Stored records -> a provenance document, in the IVOA model or plain W3C PROV.

The document is a light list of records (PROV-JSON's vocabulary), cheap to
build for thousands of activities; PROV-JSON, PROV-N, PROV-XML and PROV-VOTABLE
are written from it directly, PROV-SVG is drawn from it, and `to_prov` gives the prov
3 ProvDocument (the writers' reference: prov reads each format back equal; PROV-XML
falls back on it for values it does not write itself).

IVOA ProvDM classes PROV has no word for are PROV records typed with
``voprov:``: an ActivityDescription is an entity of type
voprov:ActivityDescription that the activity wasInfluencedBy (type
voprov:isDescribedBy); each Parameter (with its ParameterDescription) and the
execution context are entities the activity wasInfluencedBy (type
voprov:wasConfiguredBy). An activity's attributes of the recorder's own vocabulary
(`Activity.attributes`) follow its voprov ones. Every serialization stays readable by
prov 3.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prov.model import ProvDocument
from sqlalchemy import Connection, and_, bindparam, or_, select

from provenance import store
from provenance.model import VOPROV
from provenance.query import Selection

__all__ = [
    "AGENT_TYPES",
    "Document",
    "Model",
    "QName",
    "Record",
    "absolute",
    "build",
    "known_artefacts",
    "parameter_id",
    "to_prov",
]

Model = Literal["IVOA", "W3C"]
AGENT_TYPES = {
    "Person": "prov:Person",
    "SoftwareAgent": "prov:SoftwareAgent",
    "Organization": "prov:Organization",
}


class QName(str):
    """An attribute value that is a qualified name (prov:type values), not a string."""


@dataclass(slots=True)
class Record:
    """One PROV record: an element or a relation, with its attributes in order."""

    kind: str  # activity, entity, agent, used, wasGeneratedBy, wasAssociatedWith, ...
    id: str | None  # None for a relation: it gets a blank-node id when written
    formal: dict[str, Any]  # PROV-JSON's formal attributes (prov:activity, prov:time, ...)
    attributes: list[tuple[str, Any]] = field(default_factory=list)


@dataclass
class Document:
    """A provenance document: its namespaces (prefix -> URI) and its records."""

    namespaces: dict[str, str]
    records: list[Record] = field(default_factory=list)
    hidden: int = 0  # records of the lineage left out: the reader may not see them

    def add(self, kind: str, id: str | None, formal: dict[str, Any], **attributes: Any) -> None:
        """Append a record; attribute names are written prefix__name, empty values left out.

        Args:
            kind: The PROV record kind (activity, entity, used, wasGeneratedBy...).
            id: The record's qualified name; None for a relation.
            formal: PROV-JSON's formal attributes (None values left out).
            **attributes: Other attributes, e.g. ``prov__label="step"`` for prov:label.

        Returns:
            None.
        """
        pairs = [
            (_attribute_name(key), value)
            for key, value in attributes.items()
            if value is not None and value != ""
        ]
        formal = {k: v for k, v in formal.items() if v is not None}
        self.records.append(Record(kind, id, formal, pairs))


@functools.cache
def _attribute_name(key: str) -> str:
    return key.replace("__", ":")


def _pairs(names: tuple[str, ...], values: Iterable[Any]) -> list[tuple[str, Any]]:
    """(name, value) of the values given, empty ones left out (as `Document.add` does)."""
    return [(n, v) for n, v in zip(names, values, strict=True) if v is not None and v != ""]


def _rows(conn: Connection, columns: list[Any], key: Any, ids: set[str]) -> list[Any]:
    """Those columns of the rows whose `key` is one of `ids` (rows unpack as tuples)."""
    if not ids:
        return []
    return list(conn.execute(_statement(tuple(columns), key), {"ids": sorted(ids)}))


@functools.cache
def _statement(columns: tuple[Any, ...], key: Any) -> Any:
    """SELECT columns WHERE key IN :ids, made once: building the IN of thousands of
    literals anew for each document cost more than running it."""
    return select(*columns).where(key.in_(bindparam("ids", expanding=True)))


def absolute(location: str | None, base_url: str | None) -> str | None:
    """A location kept relative to the server (a path: ``/store/<id>``) as the URL it is
    on the server at `base_url`; any other location (a URL already) as it is."""
    if base_url and location and location.startswith("/") and not location.startswith("//"):
        return base_url.rstrip("/") + location
    return location


def build(
    conn: Connection,
    chosen: Selection,
    namespaces: Mapping[str, str],
    model: Model = "IVOA",
    base_url: str | None = None,
    artefacts: Iterable[str] = (),
) -> Document:
    """The provenance document of the records selected, read from the database.

    The store keeps what was recorded (locations relative to the server that recorded
    them); a document leaving the server says where it is: `base_url` makes every such
    location absolute, and `namespaces` says what the prefixes stand for there.

    Args:
        conn: A connection to the provenance tables.
        chosen: The records to show (from `provenance.query`).
        namespaces: Prefix -> URI of the prefixes of the ids (voprov is added).
        model: IVOA adds the descriptions, parameters and context of the activities
            (as voprov-typed PROV records); W3C leaves them out.
        base_url: The server's base URL: a location that is a path is made a URL under
            it. None: locations as stored.
        artefacts: Ids of descriptions, contexts or parameters (see `known_artefacts`)
            to show for themselves, whatever the model.

    Returns:
        The Document, ready for `provenance.serializers.serialize`.
    """
    doc = Document(dict(namespaces) | {"voprov": VOPROV})
    records = doc.records
    activities = _rows(conn, ACTIVITY_COLUMNS, store.activities.c.id, chosen.activities)
    own = _own_attributes(conn, {row[0] for row in activities})
    for id_, name, start, end, status, comment, replaces, _, _ in activities:
        formal = {"prov:startTime": start, "prov:endTime": end}
        if start is None or end is None:
            formal = {k: v for k, v in formal.items() if v is not None}
        values = (name, status, comment, QName(replaces) if replaces else None)
        pairs = _pairs(ACTIVITY, values)
        if id_ in own:
            pairs += own[id_]
        records.append(Record("activity", id_, formal, pairs))
    entities = _rows(conn, ENTITY_COLUMNS, store.entities.c.id, chosen.entities)
    for id_, name, location, *rest in entities:
        values = (name, absolute(location, base_url), *rest)
        records.append(Record("entity", id_, {}, _pairs(ENTITY, values)))
    for id_, kind, name, email, version in _rows(
        conn, AGENT_COLUMNS, store.agents.c.id, chosen.agents
    ):
        values = (QName(AGENT_TYPES[kind]), name, email, version)
        records.append(Record("agent", id_, {}, _pairs(AGENT, values)))
    _relations(conn, doc, chosen)
    _hidden_records(doc, chosen)
    if model == "IVOA":
        _ivoa_records(conn, doc, activities)
    artefacts = set(artefacts) - {r.id for r in records if r.kind == "entity"}
    if artefacts:
        _artefact_records(conn, doc, artefacts)
    return doc


ACTIVITY = ("prov:label", "voprov:status", "voprov:comment", "voprov:replaces")
ENTITY = (
    "prov:label",
    "prov:location",
    "voprov:content_type",
    "voprov:content_size",
    "voprov:sha256",
)
AGENT = ("prov:type", "prov:label", "voprov:email", "voprov:version")
DESCRIPTION = (
    "prov:type",
    "voprov:name",
    "voprov:version",
    "voprov:type",
    "voprov:subtype",
    "voprov:doculink",
    "voprov:description",
)
PARAMETER = (
    "prov:type",
    "prov:value",
    "voprov:name",
    "voprov:datatype",
    "voprov:unit",
    "voprov:ucd",
    "voprov:min",
    "voprov:max",
    "voprov:options",
    "voprov:description",
)
_a, _e, _g = store.activities.c, store.entities.c, store.agents.c
ACTIVITY_COLUMNS = [_a.id, _a.name, _a.start_time, _a.end_time, _a.status, _a.comment]
ACTIVITY_COLUMNS.append(_a.replaces)
ACTIVITY_COLUMNS += [_a.description_id, _a.context_id]  # last: _ivoa_records reads them
ENTITY_COLUMNS = [_e.id, _e.name, _e.location, _e.content_type, _e.size, _e.sha256]
AGENT_COLUMNS = [_g.id, _g.type, _g.name, _g.email, _g.version]
_d, _p = store.activity_descriptions.c, store.parameters.c
DESCRIPTION_COLUMNS = [_d.id, _d.name, _d.version, _d.type, _d.subtype, _d.doculink]
DESCRIPTION_COLUMNS.append(_d.description)
PARAMETER_COLUMNS = [_p.activity_id, _p.name, _p.value, _p.datatype, _p.unit, _p.ucd]
PARAMETER_COLUMNS += [_p.min, _p.max, _p.options, _p.description]


def _own_attributes(conn: Connection, ids: set[str]) -> dict[str, list[tuple[str, Any]]]:
    """Activity id -> its attributes of the recorder's vocabulary, by name."""
    t = store.activity_attributes.c
    found: dict[str, list[tuple[str, Any]]] = {}
    for activity_id, name, value in _rows(
        conn, [t.activity_id, t.name, t.value], t.activity_id, ids
    ):
        if value is not None and value != "":
            found.setdefault(activity_id, []).append((name, value))
    return {activity_id: sorted(pairs) for activity_id, pairs in found.items()}


def _relations(conn: Connection, doc: Document, chosen: Selection) -> None:
    """used, wasGeneratedBy, wasInvalidatedBy, wasAssociatedWith, wasDerivedFrom,
    wasInformedBy between the records shown."""
    records, shown, entities = doc.records, chosen.activities, chosen.entities
    u, g, a, d = store.used.c, store.generations.c, store.associations.c, store.derivations.c
    i = store.invalidations.c
    columns = [u.activity_id, u.entity_id, u.time, u.role]
    for activity, entity, time, role in _rows(conn, columns, u.activity_id, shown):
        if entity in entities:
            formal = {"prov:activity": activity, "prov:entity": entity, "prov:time": time}
            records.append(Record("used", None, _present(formal), _role(role)))
    columns = [g.entity_id, g.activity_id, g.time, g.role]
    for entity, activity, time, role in _rows(conn, columns, g.activity_id, shown):
        if entity in entities:
            formal = {"prov:entity": entity, "prov:activity": activity, "prov:time": time}
            records.append(Record("wasGeneratedBy", None, _present(formal), _role(role)))
    for entity, activity, time in _rows(
        conn, [i.entity_id, i.activity_id, i.time], i.entity_id, entities
    ):
        if activity in shown:
            formal = {"prov:entity": entity, "prov:activity": activity, "prov:time": time}
            records.append(Record("wasInvalidatedBy", None, _present(formal), []))
    for activity, agent, role in _rows(
        conn, [a.activity_id, a.agent_id, a.role], a.activity_id, shown
    ):
        if agent in chosen.agents:
            formal = {"prov:activity": activity, "prov:agent": agent}
            records.append(Record("wasAssociatedWith", None, formal, _role(role)))
    columns = [d.generated_id, d.used_id, d.activity_id]
    for generated, used, activity in _rows(conn, columns, d.generated_id, entities):
        if used in entities:
            formal = {"prov:generatedEntity": generated, "prov:usedEntity": used}
            if activity in shown:
                formal["prov:activity"] = activity
            records.append(Record("wasDerivedFrom", None, formal, []))
    c = store.communications.c
    for informed, informant in _rows(conn, [c.informed, c.informant], c.informed, shown):
        if informant in shown:
            formal = {"prov:informed": informed, "prov:informant": informant}
            records.append(Record("wasInformedBy", None, formal, []))


def _present(formal: dict[str, Any]) -> dict[str, Any]:
    """The formal attributes without a missing time."""
    if formal["prov:time"] is not None:
        return formal
    return {k: v for k, v in formal.items() if v is not None}


def _role(role: str | None) -> list[tuple[str, Any]]:
    return [("prov:role", role)] if role else []


HIDDEN_LABEL = "not visible to you"


def _hidden_records(doc: Document, chosen: Selection) -> None:
    """Where the walk stopped at records the reader may not see, one stand-in each: a
    record typed voprov:hidden with a made-up id, saying how many records it stands for,
    linked to the record shown. Nothing of the hidden records themselves is told."""
    for number, (shown, count) in enumerate(sorted(chosen.hidden.items()), start=1):
        doc.hidden += count
        stand_in = f"{shown.partition(':')[0]}:hidden_{number}"
        attributes = dict(
            prov__type=QName("voprov:hidden"), prov__label=HIDDEN_LABEL, voprov__hidden=count
        )
        if shown in chosen.entities:  # the activities that generated or used it
            doc.add("activity", stand_in, {}, **attributes)
            if chosen.direction == "BACK":
                doc.add("wasGeneratedBy", None, {"prov:entity": shown, "prov:activity": stand_in})
            else:
                doc.add("used", None, {"prov:activity": stand_in, "prov:entity": shown})
        else:  # an activity: the entities it used, or that it generated
            doc.add("entity", stand_in, {}, **attributes)
            if chosen.direction == "BACK":
                doc.add("used", None, {"prov:activity": shown, "prov:entity": stand_in})
            else:
                doc.add("wasGeneratedBy", None, {"prov:entity": stand_in, "prov:activity": shown})


def _ivoa_records(conn: Connection, doc: Document, activities: list[Any]) -> None:
    """Descriptions, parameters and context of the activities shown (rows of
    ACTIVITY_COLUMNS), each influencing its activity."""
    records = doc.records
    described = [(row[0], row[-2]) for row in activities if row[-2]]  # (id, description)
    _description_records(conn, doc, {description for _, description in described})
    for activity, description in described:
        formal = {"prov:influencee": activity, "prov:influencer": description}
        records.append(Record("wasInfluencedBy", None, formal, [DESCRIBED_BY]))
    for row in _rows(conn, PARAMETER_COLUMNS, _p.activity_id, {row[0] for row in activities}):
        parameter = _parameter_record(row)
        records.append(parameter)
        formal = {"prov:influencee": row[0], "prov:influencer": parameter.id}
        records.append(Record("wasInfluencedBy", None, formal, list(CONFIGURED_BY_PARAMETER)))
    configured = [(row[0], row[-1]) for row in activities if row[-1]]  # (id, context)
    contexts = _context_records(conn, doc, {context for _, context in configured})
    for activity, context in configured:
        if context in contexts:
            formal = {"prov:influencee": activity, "prov:influencer": context}
            records.append(Record("wasInfluencedBy", None, formal, list(CONFIGURED_BY_CONTEXT)))


DESCRIBED_BY = ("prov:type", QName("voprov:isDescribedBy"))
CONFIGURED_BY_PARAMETER = (
    ("prov:type", QName("voprov:wasConfiguredBy")),
    ("voprov:artefactType", "Parameter"),
)
CONFIGURED_BY_CONTEXT = (
    ("prov:type", QName("voprov:wasConfiguredBy")),
    ("voprov:artefactType", "Context"),
)


def _description_records(conn: Connection, doc: Document, ids: set[str]) -> None:
    kind = QName("voprov:ActivityDescription")
    for id_, *values in _rows(conn, DESCRIPTION_COLUMNS, _d.id, ids):
        doc.records.append(Record("entity", id_, {}, _pairs(DESCRIPTION, (kind, *values))))


def parameter_id(activity_id: str, name: str) -> str:
    """The id of the record of a parameter value: it has no row id of its own."""
    return f"{activity_id}_par_{name}"


def _parameter_record(row: Any) -> Record:
    activity_id, name, value, *description = row
    values = (QName("voprov:Parameter"), value, name, *description)
    return Record("entity", parameter_id(activity_id, name), {}, _pairs(PARAMETER, values))


def _context_records(conn: Connection, doc: Document, ids: set[str]) -> set[str]:
    """The records of these contexts (their keys in order); the ids of those found."""
    items: dict[str, list[tuple[str, Any]]] = {}
    c = store.contexts.c
    for context_id, key, value in _rows(conn, [c.context_id, c.key, c.value], c.context_id, ids):
        items.setdefault(context_id, []).append((_context_key(key), value))
    for context_id, pairs in items.items():
        doc.records.append(
            Record(
                "entity", context_id, {}, [("prov:type", QName("voprov:Context")), *sorted(pairs)]
            )
        )
    return set(items)


@functools.cache
def _context_key(key: str) -> str:
    return "voprov:context_" + "".join(c if c.isalnum() else "_" for c in key)


def _parameter_keys(ids: Iterable[str]) -> list[tuple[str, str]]:
    """(activity id, name) pairs a parameter id may stand for: it is split at each _par_."""
    found = []
    for id_ in ids:
        at = id_.find("_par_")
        while at > 0:
            found.append((id_[:at], id_[at + 5 :]))
            at = id_.find("_par_", at + 1)
    return found


def _parameter_rows(conn: Connection, ids: Iterable[str], allowed: Any = None) -> list[Any]:
    keys = _parameter_keys(ids)
    if not keys:
        return []
    query = select(*PARAMETER_COLUMNS).where(
        or_(*(and_(_p.activity_id == a, _p.name == n) for a, n in keys))
    )
    if allowed is not None:
        query = query.where(allowed(_p.activity_id))
    return list(conn.execute(query))


def known_artefacts(conn: Connection, ids: Iterable[str], allowed: Any = None) -> set[str]:
    """Which ids name an activity description, a context or a parameter value: what the
    IVOA model shows of an activity besides its relations, with ids of their own.

    Args:
        conn: A connection to the provenance tables.
        ids: Qualified names.
        allowed: The activity ids the reader may see (a condition on an id column,
            `provenance.query.Allowed`; None: all): an artefact is known when an allowed
            activity is described or configured by it.

    Returns:
        Those of `ids` that name one.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    found = {parameter_id(row[0], row[1]) for row in _parameter_rows(conn, wanted, allowed)}
    a = store.activities.c
    for column in (a.description_id, a.context_id):
        query = select(column).where(column.in_(wanted)).distinct()
        if allowed is not None:
            query = query.where(allowed(a.id))
        found |= {row[0] for row in conn.execute(query)}
    return found & set(wanted)


def _artefact_records(conn: Connection, doc: Document, ids: set[str]) -> None:
    """Descriptions, contexts and parameters asked for by their ids (see `known_artefacts`:
    the caller has checked they may be seen), shown for themselves."""
    _description_records(conn, doc, ids)
    _context_records(conn, doc, ids)
    for row in _parameter_rows(conn, ids):
        if parameter_id(row[0], row[1]) in ids:
            doc.records.append(_parameter_record(row))


RELATION_ARGS = {
    "used": ("prov:activity", "prov:entity", "prov:time"),
    "wasGeneratedBy": ("prov:entity", "prov:activity", "prov:time"),
    "wasInvalidatedBy": ("prov:entity", "prov:activity", "prov:time"),
    "wasAssociatedWith": ("prov:activity", "prov:agent"),
    "wasDerivedFrom": ("prov:generatedEntity", "prov:usedEntity", "prov:activity"),
    "wasInfluencedBy": ("prov:influencee", "prov:influencer"),
    "wasInformedBy": ("prov:informed", "prov:informant"),
}
PROV_METHODS = {"wasDerivedFrom": "wasDerivedFrom", "wasInfluencedBy": "influence"}


def to_prov(doc: Document) -> ProvDocument:
    """The same document as a prov 3 ProvDocument (for PROV-N, PROV-XML and graphs).

    Args:
        doc: The provenance document.

    Returns:
        An equal prov.model.ProvDocument.
    """
    prov_doc = ProvDocument()
    for prefix, uri in doc.namespaces.items():
        prov_doc.add_namespace(prefix, uri)
    q = prov_doc.valid_qualified_name

    def value(item: Any) -> Any:
        return q(item) if isinstance(item, QName) else item

    for record in doc.records:
        attributes = [(key, value(item)) for key, item in record.attributes]
        if record.kind == "activity":
            assert record.id is not None
            prov_doc.activity(
                record.id,
                record.formal.get("prov:startTime"),
                record.formal.get("prov:endTime"),
                attributes,
            )
        elif record.kind in ("entity", "agent"):
            getattr(prov_doc, record.kind)(record.id, attributes)
        else:
            args = [record.formal.get(name) for name in RELATION_ARGS[record.kind]]
            method = getattr(prov_doc, PROV_METHODS.get(record.kind, record.kind))
            method(*args, identifier=record.id, other_attributes=attributes)
    return prov_doc

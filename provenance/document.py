"""Stored records -> a provenance document, in the IVOA model or plain W3C PROV.

The document is a light list of records (PROV-JSON's vocabulary), cheap to
build for thousands of activities; PROV-JSON and PROV-VOTABLE are written from
it directly, and `to_prov` gives the prov 3 ProvDocument for the other formats.

IVOA ProvDM classes PROV has no word for are PROV records typed with
``voprov:``: an ActivityDescription is an entity of type
voprov:ActivityDescription that the activity wasInfluencedBy (type
voprov:isDescribedBy); each Parameter (with its ParameterDescription) and the
execution context are entities the activity wasInfluencedBy (type
voprov:wasConfiguredBy). Every serialization stays readable by prov 3.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prov.model import ProvDocument
from sqlalchemy import Connection, select

from provenance import store
from provenance.model import VOPROV
from provenance.query import Selection

__all__ = ["AGENT_TYPES", "Document", "Model", "QName", "Record", "build", "to_prov"]

Model = Literal["IVOA", "W3C"]
AGENT_TYPES = {
    "Person": "prov:Person",
    "SoftwareAgent": "prov:SoftwareAgent",
    "Organization": "prov:Organization",
}


class QName(str):
    """An attribute value that is a qualified name (prov:type values), not a string."""


@dataclass
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


def _rows(conn: Connection, table: Any, column: Any, ids: set[str]) -> list[Any]:
    if not ids:
        return []
    return list(conn.execute(select(table).where(column.in_(sorted(ids)))))


def build(
    conn: Connection, chosen: Selection, namespaces: Mapping[str, str], model: Model = "IVOA"
) -> Document:
    """The provenance document of the records selected, read from the database.

    Args:
        conn: A connection to the provenance tables.
        chosen: The records to show (from `provenance.query`).
        namespaces: Prefix -> URI of the prefixes of the ids (voprov is added).
        model: IVOA adds the descriptions, parameters and context of the activities
            (as voprov-typed PROV records); W3C leaves them out.

    Returns:
        The Document, ready for `provenance.serializers.serialize`.
    """
    doc = Document(dict(namespaces) | {"voprov": VOPROV})
    activities = _rows(conn, store.activities, store.activities.c.id, chosen.activities)
    for row in activities:
        doc.add(
            "activity",
            row.id,
            {"prov:startTime": row.start_time, "prov:endTime": row.end_time},
            prov__label=row.name,
            voprov__status=row.status,
            voprov__comment=row.comment,
        )
    for row in _rows(conn, store.entities, store.entities.c.id, chosen.entities):
        doc.add(
            "entity",
            row.id,
            {},
            prov__label=row.name,
            prov__location=row.location,
            voprov__content_type=row.content_type,
            voprov__content_size=row.size,
            voprov__sha256=row.sha256,
        )
    for row in _rows(conn, store.agents, store.agents.c.id, chosen.agents):
        doc.add(
            "agent",
            row.id,
            {},
            prov__type=QName(AGENT_TYPES[row.type]),
            prov__label=row.name,
            voprov__email=row.email,
            voprov__version=row.version,
        )

    shown = chosen.activities
    for row in _rows(conn, store.used, store.used.c.activity_id, shown):
        if row.entity_id in chosen.entities:
            doc.add(
                "used",
                None,
                {
                    "prov:activity": row.activity_id,
                    "prov:entity": row.entity_id,
                    "prov:time": row.time,
                },
                prov__role=row.role,
            )
    for row in _rows(conn, store.generations, store.generations.c.activity_id, shown):
        if row.entity_id in chosen.entities:
            doc.add(
                "wasGeneratedBy",
                None,
                {
                    "prov:entity": row.entity_id,
                    "prov:activity": row.activity_id,
                    "prov:time": row.time,
                },
                prov__role=row.role,
            )
    for row in _rows(conn, store.associations, store.associations.c.activity_id, shown):
        if row.agent_id in chosen.agents:
            doc.add(
                "wasAssociatedWith",
                None,
                {"prov:activity": row.activity_id, "prov:agent": row.agent_id},
                prov__role=row.role,
            )
    for row in _rows(conn, store.derivations, store.derivations.c.generated_id, chosen.entities):
        if row.used_id in chosen.entities:
            activity = row.activity_id if row.activity_id in shown else None
            doc.add(
                "wasDerivedFrom",
                None,
                {
                    "prov:generatedEntity": row.generated_id,
                    "prov:usedEntity": row.used_id,
                    "prov:activity": activity,
                },
            )
    _hidden_records(doc, chosen)
    if model == "IVOA":
        _ivoa_records(conn, doc, activities)
    return doc


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
    """Descriptions, parameters and context of the activities shown."""
    ids = {row.id for row in activities}
    descriptions = {row.description_id for row in activities if row.description_id}
    for row in _rows(
        conn, store.activity_descriptions, store.activity_descriptions.c.id, descriptions
    ):
        doc.add(
            "entity",
            row.id,
            {},
            prov__type=QName("voprov:ActivityDescription"),
            voprov__name=row.name,
            voprov__version=row.version,
            voprov__type=row.type,
            voprov__subtype=row.subtype,
            voprov__doculink=row.doculink,
            voprov__description=row.description,
        )
    for row in activities:
        if row.description_id:
            doc.add(
                "wasInfluencedBy",
                None,
                {"prov:influencee": row.id, "prov:influencer": row.description_id},
                prov__type=QName("voprov:isDescribedBy"),
            )
    for row in _rows(conn, store.parameters, store.parameters.c.activity_id, ids):
        parameter_id = f"{row.activity_id}_par_{row.name}"
        doc.add(
            "entity",
            parameter_id,
            {},
            prov__type=QName("voprov:Parameter"),
            prov__value=row.value,
            voprov__name=row.name,
            voprov__datatype=row.datatype,
            voprov__unit=row.unit,
            voprov__ucd=row.ucd,
            voprov__min=row.min,
            voprov__max=row.max,
            voprov__options=row.options,
            voprov__description=row.description,
        )
        doc.add(
            "wasInfluencedBy",
            None,
            {"prov:influencee": row.activity_id, "prov:influencer": parameter_id},
            prov__type=QName("voprov:wasConfiguredBy"),
            voprov__artefactType="Parameter",
        )
    contexts = {row.context_id for row in activities if row.context_id}
    items: dict[str, list[tuple[str, Any]]] = {}
    for row in _rows(conn, store.contexts, store.contexts.c.context_id, contexts):
        items.setdefault(row.context_id, []).append((_context_key(row.key), row.value))
    for context_id, pairs in items.items():
        doc.records.append(
            Record(
                "entity", context_id, {}, [("prov:type", QName("voprov:Context")), *sorted(pairs)]
            )
        )
    for row in activities:
        if row.context_id in items:
            doc.add(
                "wasInfluencedBy",
                None,
                {"prov:influencee": row.id, "prov:influencer": row.context_id},
                prov__type=QName("voprov:wasConfiguredBy"),
                voprov__artefactType="Context",
            )


@functools.cache
def _context_key(key: str) -> str:
    return "voprov:context_" + "".join(c if c.isalnum() else "_" for c in key)


RELATION_ARGS = {
    "used": ("prov:activity", "prov:entity", "prov:time"),
    "wasGeneratedBy": ("prov:entity", "prov:activity", "prov:time"),
    "wasAssociatedWith": ("prov:activity", "prov:agent"),
    "wasDerivedFrom": ("prov:generatedEntity", "prov:usedEntity", "prov:activity"),
    "wasInfluencedBy": ("prov:influencee", "prov:influencer"),
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
            method(*args, other_attributes=attributes)
    return prov_doc

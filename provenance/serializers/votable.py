"""PROV-VOTABLE: one TABLE per ProvDM class, ``voprov:`` utypes on tables and fields.

Written from the ProvDocument, so it shows exactly what the other formats show:
entities typed voprov:ActivityDescription, voprov:Parameter and voprov:Context
go to tables of their own, and wasInfluencedBy typed voprov:wasConfiguredBy
and voprov:isDescribedBy become WasConfiguredBy and the Activity's description.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from lxml import etree

from provenance.document import Document, Record

__all__ = ["VOTABLE_NS", "to_votable"]

VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"

Getter = Callable[[Record], Any]


def _first(record: Record, key: str) -> Any:
    return next((value for k, value in record.attributes if k == key), None)


def _attr(key: str) -> Getter:
    return lambda record: _first(record, key)


def _voprov(name: str) -> Getter:
    return _attr(f"voprov:{name}")


def _formal(key: str) -> Getter:
    return lambda record: record.formal.get(key)


def _identifier(record: Record) -> Any:
    return record.id


def _typed(record: Record) -> str:
    value = _first(record, "prov:type")
    return str(value).partition(":")[2] if value is not None else ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


TABLES: list[tuple[str, str, list[tuple[str, str, Getter]]]] = [
    (
        "Activity",
        "voprov:Activity",
        [
            ("id", "voprov:Activity.id", _identifier),
            ("name", "voprov:Activity.name", _attr("prov:label")),
            ("startTime", "voprov:Activity.startTime", _formal("prov:startTime")),
            ("endTime", "voprov:Activity.endTime", _formal("prov:endTime")),
            ("status", "voprov:Activity.status", _voprov("status")),
            ("comment", "voprov:Activity.comment", _voprov("comment")),
        ],
    ),
    (
        "ActivityDescription",
        "voprov:ActivityDescription",
        [
            ("id", "voprov:ActivityDescription.id", _identifier),
            ("name", "voprov:ActivityDescription.name", _voprov("name")),
            ("version", "voprov:ActivityDescription.version", _voprov("version")),
            ("type", "voprov:ActivityDescription.type", _voprov("type")),
            ("subtype", "voprov:ActivityDescription.subtype", _voprov("subtype")),
            ("doculink", "voprov:ActivityDescription.doculink", _voprov("doculink")),
            ("description", "voprov:ActivityDescription.description", _voprov("description")),
        ],
    ),
    (
        "Entity",
        "voprov:Entity",
        [
            ("id", "voprov:Entity.id", _identifier),
            ("name", "voprov:Entity.name", _attr("prov:label")),
            ("location", "voprov:Entity.location", _attr("prov:location")),
            ("content_type", "voprov:EntityDescription.content_type", _voprov("content_type")),
            ("content_size", "voprov:Entity.content_size", _voprov("content_size")),
            ("sha256", "voprov:Entity.sha256", _voprov("sha256")),
        ],
    ),
    (
        "Parameter",
        "voprov:Parameter",
        [
            ("id", "voprov:Parameter.id", _identifier),
            ("name", "voprov:ParameterDescription.name", _voprov("name")),
            ("value", "voprov:Parameter.value", _attr("prov:value")),
            ("datatype", "voprov:ParameterDescription.datatype", _voprov("datatype")),
            ("unit", "voprov:ParameterDescription.unit", _voprov("unit")),
            ("ucd", "voprov:ParameterDescription.ucd", _voprov("ucd")),
            ("min", "voprov:ParameterDescription.min", _voprov("min")),
            ("max", "voprov:ParameterDescription.max", _voprov("max")),
            ("options", "voprov:ParameterDescription.options", _voprov("options")),
            ("description", "voprov:ParameterDescription.description", _voprov("description")),
        ],
    ),
    (
        "Agent",
        "voprov:Agent",
        [
            ("id", "voprov:Agent.id", _identifier),
            ("name", "voprov:Agent.name", _attr("prov:label")),
            ("type", "voprov:Agent.type", _typed),
            ("email", "voprov:Agent.email", _voprov("email")),
            ("version", "voprov:Agent.version", _voprov("version")),
        ],
    ),
    (
        "Used",
        "voprov:Used",
        [
            ("activity", "voprov:Used.activity", _formal("prov:activity")),
            ("entity", "voprov:Used.entity", _formal("prov:entity")),
            ("role", "voprov:Used.role", _attr("prov:role")),
            ("time", "voprov:Used.time", _formal("prov:time")),
        ],
    ),
    (
        "WasGeneratedBy",
        "voprov:WasGeneratedBy",
        [
            ("entity", "voprov:WasGeneratedBy.entity", _formal("prov:entity")),
            ("activity", "voprov:WasGeneratedBy.activity", _formal("prov:activity")),
            ("role", "voprov:WasGeneratedBy.role", _attr("prov:role")),
            ("time", "voprov:WasGeneratedBy.time", _formal("prov:time")),
        ],
    ),
    (
        "WasAssociatedWith",
        "voprov:WasAssociatedWith",
        [
            ("activity", "voprov:WasAssociatedWith.activity", _formal("prov:activity")),
            ("agent", "voprov:WasAssociatedWith.agent", _formal("prov:agent")),
            ("role", "voprov:WasAssociatedWith.role", _attr("prov:role")),
        ],
    ),
    (
        "WasDerivedFrom",
        "voprov:WasDerivedFrom",
        [
            (
                "generatedEntity",
                "voprov:WasDerivedFrom.generatedEntity",
                _formal("prov:generatedEntity"),
            ),
            ("usedEntity", "voprov:WasDerivedFrom.usedEntity", _formal("prov:usedEntity")),
            ("activity", "voprov:WasDerivedFrom.activity", _formal("prov:activity")),
        ],
    ),
    (
        "WasConfiguredBy",
        "voprov:WasConfiguredBy",
        [
            ("activity", "voprov:WasConfiguredBy.activity", _formal("prov:influencee")),
            ("artefact", "voprov:WasConfiguredBy.artefact", _formal("prov:influencer")),
            ("artefactType", "voprov:WasConfiguredBy.artefactType", _voprov("artefactType")),
        ],
    ),
    (
        "IsDescribedBy",
        "voprov:IsDescribedBy",
        [
            ("activity", "voprov:IsDescribedBy.activity", _formal("prov:influencee")),
            ("description", "voprov:IsDescribedBy.description", _formal("prov:influencer")),
        ],
    ),
]


TABLE_OF = {
    "activity": "Activity",
    "agent": "Agent",
    "used": "Used",
    "wasGeneratedBy": "WasGeneratedBy",
    "wasAssociatedWith": "WasAssociatedWith",
    "wasDerivedFrom": "WasDerivedFrom",
}


def _table_of(record: Record) -> str | None:
    if record.kind == "entity":
        kind = _typed(record)
        if kind in ("ActivityDescription", "Parameter"):
            return kind
        return None if kind == "Context" else "Entity"
    if record.kind == "wasInfluencedBy":
        kind = _typed(record)
        return {"wasConfiguredBy": "WasConfiguredBy", "isDescribedBy": "IsDescribedBy"}.get(kind)
    return TABLE_OF.get(record.kind)


def _tag(name: str) -> str:
    return f"{{{VOTABLE_NS}}}{name}"


def to_votable(doc: Document) -> bytes:
    """Write a document as PROV-VOTABLE.

    Args:
        doc: The provenance document.

    Returns:
        The VOTable 1.3 XML, UTF-8, one TABLE per ProvDM class present.
    """
    rows: dict[str, list[Record]] = {name: [] for name, _, _ in TABLES}
    for record in doc.records:
        kind = _table_of(record)
        if kind is not None:
            rows[kind].append(record)
    nsmap: Any = {None: VOTABLE_NS}  # VOTable elements in the default namespace
    root = etree.Element(_tag("VOTABLE"), nsmap=nsmap, version="1.3")
    resource = etree.SubElement(
        root, _tag("RESOURCE"), type="results", utype="voprov:ProvenanceDocument"
    )
    etree.SubElement(resource, _tag("INFO"), name="QUERY_STATUS", value="OK")
    if doc.hidden:
        etree.SubElement(
            resource, _tag("INFO"), name="hidden", value=str(doc.hidden)
        ).text = f"{doc.hidden} record(s) of this lineage are not visible to you"
    for name, utype, fields in TABLES:
        if not rows[name]:
            continue
        table = etree.SubElement(resource, _tag("TABLE"), name=name, utype=utype)
        for field, field_utype, _ in fields:
            etree.SubElement(
                table,
                _tag("FIELD"),
                ID=f"{name}_{field}",
                name=field,
                datatype="char",
                arraysize="*",
                utype=field_utype,
            )
        data = etree.SubElement(etree.SubElement(table, _tag("DATA")), _tag("TABLEDATA"))
        for record in rows[name]:
            tr = etree.SubElement(data, _tag("TR"))
            for _, _, get in fields:
                etree.SubElement(tr, _tag("TD")).text = _text(get(record))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)

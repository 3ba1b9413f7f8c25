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
from prov.model import (
    PROV_ATTR_ACTIVITY,
    PROV_ATTR_AGENT,
    PROV_ATTR_ENDTIME,
    PROV_ATTR_ENTITY,
    PROV_ATTR_GENERATED_ENTITY,
    PROV_ATTR_INFLUENCEE,
    PROV_ATTR_INFLUENCER,
    PROV_ATTR_STARTTIME,
    PROV_ATTR_TIME,
    PROV_ATTR_USED_ENTITY,
    PROV_LABEL,
    PROV_LOCATION,
    PROV_ROLE,
    PROV_TYPE,
    PROV_VALUE,
    ProvActivity,
    ProvAgent,
    ProvAssociation,
    ProvDerivation,
    ProvDocument,
    ProvEntity,
    ProvGeneration,
    ProvInfluence,
    ProvRecord,
    ProvUsage,
)

from provenance.model import VOPROV

VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"

# (table name, utype, [(field, utype attribute, how to read it from a record)])
Getter = Callable[[ProvRecord], Any]


def _first(record: ProvRecord, key: Any) -> Any:
    values = [v for k, v in record.attributes if k == key]
    return values[0] if values else None


def _attr(key: Any) -> Getter:
    return lambda record: _first(record, key)


def _voprov(name: str) -> Getter:
    def get(record: ProvRecord) -> Any:
        for key, value in record.attributes:
            namespace = getattr(key, "namespace", None)
            if namespace is not None and namespace.uri == VOPROV and key.localpart == name:
                return value
        return None

    return get


def _identifier(record: ProvRecord) -> Any:
    return record.identifier


def _typed(record: ProvRecord) -> str:
    value = _first(record, PROV_TYPE)
    return getattr(value, "localpart", str(value) if value is not None else "")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(getattr(value, "value", value))


TABLES: list[tuple[str, str, list[tuple[str, str, Getter]]]] = [
    (
        "Activity",
        "voprov:Activity",
        [
            ("id", "voprov:Activity.id", _identifier),
            ("name", "voprov:Activity.name", _attr(PROV_LABEL)),
            ("startTime", "voprov:Activity.startTime", _attr(PROV_ATTR_STARTTIME)),
            ("endTime", "voprov:Activity.endTime", _attr(PROV_ATTR_ENDTIME)),
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
            ("name", "voprov:Entity.name", _attr(PROV_LABEL)),
            ("location", "voprov:Entity.location", _attr(PROV_LOCATION)),
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
            ("value", "voprov:Parameter.value", _attr(PROV_VALUE)),
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
            ("name", "voprov:Agent.name", _attr(PROV_LABEL)),
            ("type", "voprov:Agent.type", _typed),
            ("email", "voprov:Agent.email", _voprov("email")),
            ("version", "voprov:Agent.version", _voprov("version")),
        ],
    ),
    (
        "Used",
        "voprov:Used",
        [
            ("activity", "voprov:Used.activity", _attr(PROV_ATTR_ACTIVITY)),
            ("entity", "voprov:Used.entity", _attr(PROV_ATTR_ENTITY)),
            ("role", "voprov:Used.role", _attr(PROV_ROLE)),
            ("time", "voprov:Used.time", _attr(PROV_ATTR_TIME)),
        ],
    ),
    (
        "WasGeneratedBy",
        "voprov:WasGeneratedBy",
        [
            ("entity", "voprov:WasGeneratedBy.entity", _attr(PROV_ATTR_ENTITY)),
            ("activity", "voprov:WasGeneratedBy.activity", _attr(PROV_ATTR_ACTIVITY)),
            ("role", "voprov:WasGeneratedBy.role", _attr(PROV_ROLE)),
            ("time", "voprov:WasGeneratedBy.time", _attr(PROV_ATTR_TIME)),
        ],
    ),
    (
        "WasAssociatedWith",
        "voprov:WasAssociatedWith",
        [
            ("activity", "voprov:WasAssociatedWith.activity", _attr(PROV_ATTR_ACTIVITY)),
            ("agent", "voprov:WasAssociatedWith.agent", _attr(PROV_ATTR_AGENT)),
            ("role", "voprov:WasAssociatedWith.role", _attr(PROV_ROLE)),
        ],
    ),
    (
        "WasDerivedFrom",
        "voprov:WasDerivedFrom",
        [
            (
                "generatedEntity",
                "voprov:WasDerivedFrom.generatedEntity",
                _attr(PROV_ATTR_GENERATED_ENTITY),
            ),
            ("usedEntity", "voprov:WasDerivedFrom.usedEntity", _attr(PROV_ATTR_USED_ENTITY)),
            ("activity", "voprov:WasDerivedFrom.activity", _attr(PROV_ATTR_ACTIVITY)),
        ],
    ),
    (
        "WasConfiguredBy",
        "voprov:WasConfiguredBy",
        [
            ("activity", "voprov:WasConfiguredBy.activity", _attr(PROV_ATTR_INFLUENCEE)),
            ("artefact", "voprov:WasConfiguredBy.artefact", _attr(PROV_ATTR_INFLUENCER)),
            ("artefactType", "voprov:WasConfiguredBy.artefactType", _voprov("artefactType")),
        ],
    ),
    (
        "IsDescribedBy",
        "voprov:IsDescribedBy",
        [
            ("activity", "voprov:IsDescribedBy.activity", _attr(PROV_ATTR_INFLUENCEE)),
            ("description", "voprov:IsDescribedBy.description", _attr(PROV_ATTR_INFLUENCER)),
        ],
    ),
]


def _table_of(record: ProvRecord) -> str | None:
    if isinstance(record, ProvActivity):
        return "Activity"
    if isinstance(record, ProvAgent):
        return "Agent"
    if isinstance(record, ProvEntity):
        kind = _typed(record)
        if kind in ("ActivityDescription", "Parameter"):
            return kind
        return None if kind == "Context" else "Entity"
    if isinstance(record, ProvUsage):
        return "Used"
    if isinstance(record, ProvGeneration):
        return "WasGeneratedBy"
    if isinstance(record, ProvAssociation):
        return "WasAssociatedWith"
    if isinstance(record, ProvDerivation):
        return "WasDerivedFrom"
    if isinstance(record, ProvInfluence):
        kind = _typed(record)
        return {"wasConfiguredBy": "WasConfiguredBy", "isDescribedBy": "IsDescribedBy"}.get(kind)
    return None


def _tag(name: str) -> str:
    return f"{{{VOTABLE_NS}}}{name}"


def to_votable(doc: ProvDocument) -> bytes:
    rows: dict[str, list[ProvRecord]] = {name: [] for name, _, _ in TABLES}
    for record in doc.get_records():
        kind = _table_of(record)
        if kind is not None:
            rows[kind].append(record)
    nsmap: Any = {None: VOTABLE_NS}  # VOTable elements in the default namespace
    root = etree.Element(_tag("VOTABLE"), nsmap=nsmap, version="1.3")
    resource = etree.SubElement(
        root, _tag("RESOURCE"), type="results", utype="voprov:ProvenanceDocument"
    )
    etree.SubElement(resource, _tag("INFO"), name="QUERY_STATUS", value="OK")
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

"""PROV-VOTABLE: one TABLE per ProvDM class, ``voprov:`` utypes on tables and fields.

Written from the Document (as text: lxml took a third of a second for the lineage of
1,000 jobs), so it shows exactly what the other formats show:
entities typed voprov:ActivityDescription, voprov:Parameter and voprov:Context
go to tables of their own, and wasInfluencedBy typed voprov:wasConfiguredBy
and voprov:isDescribedBy become WasConfiguredBy and the Activity's description; an
invalidated entity has its row in WasInvalidatedBy (the reason is the comment of its
invalidation activity), a communication its row in WasInformedBy. An activity's
attributes of another vocabulary than prov's and voprov's (e.g. ``opus:schedule``) are
columns of the Activity table named as the attribute, without a utype. An INFO
``prefix:<prefix>`` says what each prefix of the ids stands for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from provenance.document import Document, Record

__all__ = ["VOTABLE_NS", "to_votable"]

VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"

# A column's value from a record and its attributes (the first value of each name)
Getter = Callable[[Record, dict[str, Any]], Any]


def _attr(key: str) -> Getter:
    return lambda record, attributes: attributes.get(key)


def _voprov(name: str) -> Getter:
    return _attr(f"voprov:{name}")


def _formal(key: str) -> Getter:
    return lambda record, attributes: record.formal.get(key)


def _identifier(record: Record, attributes: dict[str, Any]) -> Any:
    return record.id


def _typed(record: Record, attributes: dict[str, Any]) -> str:
    return _type_name(attributes)


def _type_name(attributes: dict[str, Any]) -> str:
    value = attributes.get("prov:type")
    return str(value).partition(":")[2] if value is not None else ""


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
            ("replaces", "voprov:Activity.replaces", _voprov("replaces")),
        ],
    ),
    # (then a column for each attribute of another vocabulary its activities have)
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
        "WasInvalidatedBy",
        "voprov:WasInvalidatedBy",
        [
            ("entity", "voprov:WasInvalidatedBy.entity", _formal("prov:entity")),
            ("activity", "voprov:WasInvalidatedBy.activity", _formal("prov:activity")),
            ("time", "voprov:WasInvalidatedBy.time", _formal("prov:time")),
        ],
    ),
    (
        "WasInformedBy",
        "voprov:WasInformedBy",
        [
            ("informed", "voprov:WasInformedBy.informed", _formal("prov:informed")),
            ("informant", "voprov:WasInformedBy.informant", _formal("prov:informant")),
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
    "wasInvalidatedBy": "WasInvalidatedBy",
    "wasAssociatedWith": "WasAssociatedWith",
    "wasDerivedFrom": "WasDerivedFrom",
    "wasInformedBy": "WasInformedBy",
}
STANDARD_PREFIXES = ("prov:", "voprov:")


def _table_of(record: Record, attributes: dict[str, Any]) -> str | None:
    if record.kind == "entity":
        kind = _type_name(attributes)
        if kind in ("ActivityDescription", "Parameter"):
            return kind
        return None if kind == "Context" else "Entity"
    if record.kind == "wasInfluencedBy":
        kind = _type_name(attributes)
        return {"wasConfiguredBy": "WasConfiguredBy", "isDescribedBy": "IsDescribedBy"}.get(kind)
    return TABLE_OF.get(record.kind)


HEAD = (
    "<?xml version='1.0' encoding='UTF-8'?>\n"
    f'<VOTABLE xmlns="{VOTABLE_NS}" version="1.3">\n'
    '  <RESOURCE type="results" utype="voprov:ProvenanceDocument">\n'
    '    <INFO name="QUERY_STATUS" value="OK"/>\n'
)
TAIL = "  </RESOURCE>\n</VOTABLE>\n"
ROW_START = "          <TR>\n            <TD>"
CELL_BREAK = "</TD>\n            <TD>"
ROW_END = "</TD>\n          </TR>\n"


def to_votable(doc: Document) -> bytes:
    """Write a document as PROV-VOTABLE.

    Args:
        doc: The provenance document.

    Returns:
        The VOTable 1.3 XML, UTF-8, one TABLE per ProvDM class present.

    Raises:
        ValueError: A value holds a character XML cannot hold (a control character).
    """
    tables = _with_own_attributes(doc)
    rows: dict[str, list[str]] = {name: [] for name, _, _ in tables}
    getters = {name: [get for _, _, get in fields] for name, _, fields in tables}
    texts = _Texts()
    for record in doc.records:
        attributes = dict(reversed(record.attributes))  # the first value of each name
        kind = _table_of(record, attributes)
        if kind is not None:
            values = [get(record, attributes) for get in getters[kind]]
            cells = [texts[v] if type(v) is str else _text(v) for v in values]
            rows[kind].append(ROW_START + CELL_BREAK.join(cells) + ROW_END)
    parts = [HEAD]
    parts += [  # what the prefixes of the ids stand for, as PROV-N's prefix lines say
        f'    <INFO name="prefix:{_text(prefix)}" value="{_attribute(uri)}"/>\n'
        for prefix, uri in doc.namespaces.items()
    ]
    if doc.hidden:
        parts.append(
            f'    <INFO name="hidden" value="{doc.hidden}">'
            f"{doc.hidden} record(s) of this lineage are not visible to you</INFO>\n"
        )
    for name, utype, fields in tables:
        if rows[name]:
            parts.append(_table_head(name, utype, fields))
            parts += rows[name]
            parts.append("        </TABLEDATA>\n      </DATA>\n    </TABLE>\n")
    parts.append(TAIL)
    return "".join(parts).encode()


def _with_own_attributes(doc: Document) -> list[tuple[str, str, list[tuple[str, str, Getter]]]]:
    """TABLES, the Activity table with a column for each attribute of another vocabulary
    that an activity of the document has (in the order they first come)."""
    names = {
        key: None
        for record in doc.records
        if record.kind == "activity"
        for key, _ in record.attributes
        if not key.startswith(STANDARD_PREFIXES)
    }
    if not names:
        return TABLES
    return [
        (table, utype, fields + [(key, "", _attr(key)) for key in names])
        if table == "Activity"
        else (table, utype, fields)
        for table, utype, fields in TABLES
    ]


_NOT_ID = re.compile(r"[^A-Za-z0-9_.-]")


def _table_head(name: str, utype: str, fields: list[tuple[str, str, Getter]]) -> str:
    lines = [f'    <TABLE name="{name}" utype="{utype}">\n']
    ids: set[str] = set()
    for field, field_utype, _ in fields:
        field_id = _NOT_ID.sub("_", f"{name}_{field}")
        while field_id in ids:  # two names that differ where an XML ID cannot
            field_id += "_"
        ids.add(field_id)
        typed = f' utype="{field_utype}"' if field_utype else ""
        lines.append(
            f'      <FIELD ID="{field_id}" name="{_attribute(field)}" datatype="char"'
            f' arraysize="*"{typed}/>\n'
        )
    lines.append("      <DATA>\n        <TABLEDATA>\n")
    return "".join(lines)


_SPECIAL = re.compile(r"[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class _Texts(dict[str, str]):
    """Strings as cells' texts, remembered for the document: ids recur in every relation."""

    def __missing__(self, value: str) -> str:
        text = self[value] = _text(value)
        return text


def _text(value: Any) -> str:
    """A cell's text, escaped as lxml escapes text."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    if _SPECIAL.search(text) is None:
        return text
    if _NOT_XML.search(text):
        raise ValueError(f"{text[:80]!r}: a character XML cannot hold")
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _attribute(text: str) -> str:
    return _text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")

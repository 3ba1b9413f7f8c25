"""The lexical forms every writer shares: how prov 3 spells a number, a time or a
qualified name, so that documents written directly read back equal to prov's own."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "FORMAL",
    "SUBTYPE_ELEMENTS",
    "datetime_text",
    "double_text",
    "grouped",
    "int_type",
    "is_plain_qname",
]

# The formal attributes of each record kind, in the order PROV-N and PROV-XML write them
# (prov's FORMAL_ATTRIBUTES): the missing ones are "-" in PROV-N, left out in PROV-XML.
FORMAL: dict[str, tuple[str, ...]] = {
    "activity": ("prov:startTime", "prov:endTime"),
    "entity": (),
    "agent": (),
    "used": ("prov:activity", "prov:entity", "prov:time"),
    "wasGeneratedBy": ("prov:entity", "prov:activity", "prov:time"),
    "wasInvalidatedBy": ("prov:entity", "prov:activity", "prov:time"),
    "wasAssociatedWith": ("prov:activity", "prov:agent", "prov:plan"),
    "wasDerivedFrom": (
        "prov:generatedEntity",
        "prov:usedEntity",
        "prov:activity",
        "prov:generation",
        "prov:usage",
    ),
    "wasInfluencedBy": ("prov:influencee", "prov:influencer"),
    "wasInformedBy": ("prov:informed", "prov:informant"),
}

# A prov:type naming a subtype PROV-XML has an element for (prov's ADDITIONAL_N_MAP): the
# record is written as that element, without the prov:type.
SUBTYPE_ELEMENTS = {
    "prov:Person": "person",
    "prov:SoftwareAgent": "softwareAgent",
    "prov:Organization": "organization",
    "prov:Plan": "plan",
    "prov:Collection": "collection",
    "prov:EmptyCollection": "emptyCollection",
    "prov:Revision": "wasRevisionOf",
    "prov:Quotation": "wasQuotedFrom",
    "prov:PrimarySource": "hadPrimarySource",
}

_INT32 = 2**31
_INT64 = 2**63

# prefix:local where neither needs escaping in any format: ASCII NCName parts, the local
# part neither starting with '-' or '.' nor ending with '.' (PROV-N's PN_LOCAL)
_PLAIN_QNAME = re.compile(
    r"[A-Za-z_][A-Za-z0-9_.-]*:(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_-])?)"
)


def is_plain_qname(text: str) -> bool:
    """Whether `text` is a qualified name every format writes as it stands."""
    return _PLAIN_QNAME.fullmatch(text) is not None


def int_type(value: int) -> str:
    """The XSD datatype prov gives a Python int: by its magnitude."""
    if -_INT32 <= value < _INT32:
        return "xsd:int"
    if -_INT64 <= value < _INT64:
        return "xsd:long"
    return "xsd:integer"


def double_text(value: float) -> str:
    """A float as xsd:double: INF, -INF and NaN for the values that are not finite."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return float.__repr__(value)


def datetime_text(value: datetime) -> str:
    """ISO 8601 with a zone xsd:dateTime allows: an offset that is not a whole number of
    minutes (historical local mean times) is written in UTC."""
    if value.tzinfo is None:
        return value.isoformat()
    offset = value.utcoffset()
    if offset is not None and (offset.total_seconds() % 60 or offset.microseconds):
        value = value.astimezone(UTC)
    return value.isoformat()


def grouped(attributes: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Values of a repeated attribute together, each value once: prov keeps a set of
    values per attribute, in the order the attributes first came."""
    groups: dict[str, list[Any]] = {}
    for key, value in attributes:
        values = groups.setdefault(key, [])
        if value not in values:
            values.append(value)
    return [(key, value) for key, values in groups.items() for value in values]

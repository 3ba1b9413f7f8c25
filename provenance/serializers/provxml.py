"""PROV-XML (W3C Working Group Note), written straight from the light document.

prov 3 takes three quarters of a second to build and write the lineage of 1,000 jobs
through lxml; this writer joins strings. It writes what prov 3 writes, byte for byte
(the tests compare): each record's attributes in the order prov.xsd requires (formal
ones, then prov:label, location, role, type, value, then the others alphabetically),
``xsi:type`` where prov puts it, agents typed prov:Person as ``prov:person`` and so on.

An attribute name that is not a plain NCName would need escaping as an element name:
such a (rare) document is handed to prov 3 whole. (One liberty: only agents, entities
and derivations become subtype elements; prov would make an activity typed prov:Person
a prov:person.)
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from provenance.document import Document, QName, Record, to_prov
from provenance.serializers.lexical import (
    FORMAL,
    SUBTYPE_ELEMENTS,
    datetime_text,
    double_text,
    grouped,
    int_type,
)

__all__ = ["to_provxml"]

PROV_NS = "http://www.w3.org/ns/prov#"
XSD_NS = "http://www.w3.org/2001/XMLSchema"  # PROV-XML's, without prov's trailing '#'
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
HEAD = "<?xml version='1.0' encoding='UTF-8'?>\n"

TIMES = frozenset({"prov:time", "prov:startTime", "prov:endTime"})
# Attributes whose text values carry xsi:type="xsd:string" (as in the PROV-XML Note)
TYPED_STRINGS = frozenset({"prov:type", "prov:location", "prov:value"})
UNTYPED = frozenset({"prov:time", "prov:label"})  # never given an inferred xsi:type
# After the formal attributes, these come first, in this order (prov.xsd's sequence)
FIRST = {"prov:label": 0, "prov:location": 1, "prov:role": 2, "prov:type": 3, "prov:value": 4}
OTHERS = len(FIRST)

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*:[A-Za-z_][A-Za-z0-9_.-]*")
_SPECIAL = re.compile(r"[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPECIAL_IN_ATTRIBUTE = re.compile(
    r'[&<>"\r\n\t\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]'
)
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ORDER_CACHE_SIZE = 4096


class _NotPlain(Exception):
    """An attribute name this writer does not escape: prov 3 writes the document."""


def to_provxml(doc: Document) -> bytes:
    """Write a document as PROV-XML.

    Args:
        doc: The provenance document.

    Returns:
        The PROV-XML document, UTF-8.

    Raises:
        ValueError: A value holds a character XML cannot hold (a control character).
    """
    try:
        return _write(doc).encode()
    except _NotPlain:
        stream = io.BytesIO()
        to_prov(doc).serialize(stream, format="xml")
        return stream.getvalue()


def _write(doc: Document) -> str:
    namespaces = dict(doc.namespaces) | {"prov": PROV_NS, "xsd": XSD_NS, "xsi": XSI_NS}
    declarations = " ".join(
        f'xmlns:{prefix}="{_attribute(uri)}"' for prefix, uri in namespaces.items()
    )
    if not doc.records:
        return f"{HEAD}<prov:document {declarations}/>\n"
    parts = [f"{HEAD}<prov:document {declarations}>\n"]
    tags, refs = _Tags(), _Refs()
    strings = _Strings(tags)
    parts += [_record(record, tags, refs, strings) for record in doc.records]
    parts.append("</prov:document>\n")
    return "".join(parts)


class _Tags(dict[str, tuple[str, str]]):
    """An attribute's element as its opening (without '>') and closing tags."""

    def __missing__(self, name: str) -> tuple[str, str]:
        if _PLAIN_NAME.fullmatch(name) is None:
            raise _NotPlain(name)
        tags = (f"    <{name}", f"</{name}>\n")
        self[name] = tags
        return tags


class _Refs(dict[str, str]):
    """Ids escaped for an attribute, remembered: each is named by three or four records."""

    def __missing__(self, name: str) -> str:
        escaped = self[name] = _attribute(name)
        return escaped


# Kinds whose prov:type may name a subtype PROV-XML has an element for
SUBTYPED = frozenset({"agent", "entity", "wasDerivedFrom"})


class _Strings(dict[tuple[str, str], str]):
    """Attributes of string values as elements, remembered for the document: roles,
    statuses, content types recur."""

    def __init__(self, tags: _Tags) -> None:
        super().__init__()
        self.tags = tags

    def __missing__(self, pair: tuple[str, str]) -> str:
        element = self[pair] = _child(*pair, self.tags)
        return element


def _record(record: Record, tags: _Tags, refs: _Refs, strings: _Strings) -> str:
    attributes = record.attributes
    element = record.kind
    if attributes and element in SUBTYPED:
        element, attributes = _subtype(element, attributes)
    head = f"  <prov:{element}"
    if record.id is not None:
        head += f' prov:id="{refs[record.id]}"'
    children = _formal(record, refs)
    if attributes:
        children += [
            strings[key, value] if type(value) is str else _child(key, value, tags)
            for key, value in _ordered(attributes)
        ]
    if not children:
        return head + "/>\n"
    return f"{head}>\n{''.join(children)}  </prov:{element}>\n"


def _subtype(kind: str, attributes: list[tuple[str, Any]]) -> tuple[str, list[tuple[str, Any]]]:
    """The element of a record typed with a PROV subtype (prov:person...), and its other
    attributes: the type is said by the element."""
    for index, (key, value) in enumerate(attributes):
        if key == "prov:type" and type(value) is QName and value in SUBTYPE_ELEMENTS:
            return SUBTYPE_ELEMENTS[value], attributes[:index] + attributes[index + 1 :]
    return kind, attributes


# Each kind's formal attributes: (name, a time?, its element up to the value)
_FORMAL = {
    kind: [
        (key, key in TIMES, f"    <{key}>" if key in TIMES else f'    <{key} prov:ref="')
        for key in keys
    ]
    for kind, keys in FORMAL.items()
}


def _formal(record: Record, refs: _Refs) -> list[str]:
    children = []
    formal = record.formal
    for key, time, opening in _FORMAL[record.kind]:
        value = formal.get(key)
        if value is None:
            continue
        if not time:
            children.append(f'{opening}{refs[str(value)]}"/>\n')
        elif isinstance(value, datetime):
            children.append(f"{opening}{datetime_text(value)}</{key}>\n")
        else:
            children.append(f"{opening}{_text(str(value))}</{key}>\n")
    return children


_orders: dict[tuple[str, ...], tuple[int, ...] | None] = {}  # None: in order already


def _ordered(attributes: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The attributes in prov's order. The order of distinct names depends on the names
    alone and records of a kind share theirs: it is worked out once per set of names."""
    if len(attributes) == 1:
        return attributes
    names = tuple([key for key, _ in attributes])
    try:
        order = _orders[names]
    except KeyError:
        if len(set(names)) < len(names):  # a repeated name: its values in order too
            return sorted(grouped(attributes), key=_sort_key)
        order = _order(names)
    return attributes if order is None else [attributes[i] for i in order]


def _order(names: tuple[str, ...]) -> tuple[int, ...] | None:
    order: tuple[int, ...] | None = tuple(sorted(range(len(names)), key=lambda i: _rank(names[i])))
    if order == tuple(range(len(names))):
        order = None
    if len(_orders) >= _ORDER_CACHE_SIZE:
        _orders.clear()
    _orders[names] = order
    return order


def _rank(name: str) -> tuple[int, str]:
    return FIRST.get(name, OTHERS), name


def _sort_key(pair: tuple[str, Any]) -> tuple[int, str, str]:
    return (*_rank(pair[0]), str(pair[1]))


def _child(name: str, value: Any, tags: _Tags) -> str:
    """One attribute as an element, typed as prov types it."""
    opening, closing = tags[name]
    kind = type(value)
    if kind is QName:
        return f'{opening} xsi:type="xsd:QName">{_text(value)}{closing}'
    if isinstance(value, str):
        typed = name in TYPED_STRINGS and not value.startswith("prov:")
        return f"{opening}{_STRING if typed else ''}>{_text(value)}{closing}"
    writer = _TYPED.get(kind)
    if writer is not None:
        text, datatype = writer(value)
        if name in UNTYPED:
            return f"{opening}>{_text(str(value) if kind is bool else text)}{closing}"
        if kind is datetime and name.startswith("prov:") and "time" in name[5:].lower():
            return f"{opening}>{_text(text)}{closing}"
        return f'{opening} xsi:type="{datatype}">{_text(text)}{closing}'
    return f"{opening}>{_text(str(value))}{closing}"


_STRING = ' xsi:type="xsd:string"'
_TYPED: dict[type, Callable[[Any], tuple[str, str]]] = {
    bool: lambda value: ("true" if value else "false", "xsd:boolean"),
    int: lambda value: (str(value), int_type(value)),
    float: lambda value: (double_text(value), "xsd:double"),
    datetime: lambda value: (datetime_text(value), "xsd:dateTime"),
}


def _text(text: str) -> str:
    """Text content escaped as lxml escapes it."""
    if _SPECIAL.search(text) is None:
        return text
    _check_xml(text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _attribute(text: str) -> str:
    """An attribute value escaped as lxml escapes it."""
    if _SPECIAL_IN_ATTRIBUTE.search(text) is None:
        return text
    _check_xml(text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\r", "&#13;")
        .replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )


def _check_xml(text: str) -> None:
    if _NOT_XML.search(text):
        raise ValueError(f"{text[:80]!r}: a character XML cannot hold")

"""PROV-N (W3C Recommendation), written straight from the light document.

prov 3 builds a ProvDocument record by record and then writes it: over half a second
for the lineage of 1,000 jobs. This writer spells every record as prov 3 does (the same
text, byte for byte: the tests compare), so prov's strict parser reads it back equal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from provenance.document import Document, QName, Record
from provenance.serializers.lexical import (
    FORMAL,
    datetime_text,
    double_text,
    grouped,
    int_type,
    is_plain_qname,
)

__all__ = ["to_provn"]

ELEMENTS = frozenset({"activity", "entity", "agent"})
TIMES = frozenset({"prov:time", "prov:startTime", "prov:endTime"})
# What PROV-N cannot hold inside <...> (its IRI_REF)
NOT_IRI = re.compile(r'[<>"{}|^`\\\x00-\x20]')


def to_provn(doc: Document) -> bytes:
    """Write a document as PROV-N.

    Args:
        doc: The provenance document.

    Returns:
        The PROV-N text, UTF-8.

    Raises:
        ValueError: A namespace URI is not an IRI PROV-N can write (a space, a control
            character or one of <>"{}|^`\\ in it).
    """
    lines = ["document"]
    for prefix, uri in doc.namespaces.items():
        if NOT_IRI.search(uri):
            raise ValueError(f"prefix {prefix!r} has URI <{uri}>, which PROV-N cannot write")
        lines.append(f"prefix {prefix} <{uri}>")
    if len(lines) > 1:
        lines.append("")  # a blank line between the prefixes and the records
    names, strings = _Names(doc.namespaces), _Strings()
    lines += [_record(record, names, strings) for record in doc.records]
    return ("\n  ".join(lines) + "\nendDocument").encode()


class _Names(dict[str, str]):
    """Qualified names as PROV-N writes them, remembered for the document: ids and
    attribute names recur (every entity is named by three or four records)."""

    def __init__(self, namespaces: Mapping[str, str]) -> None:
        super().__init__()
        self.namespaces = namespaces

    def __missing__(self, name: str) -> str:
        written = name if is_plain_qname(name) else _escaped(name, self.namespaces)
        self[name] = written
        return written


def _escaped(name: str, namespaces: Mapping[str, str]) -> str:
    """A qualified name whose local part PROV-N must escape, escaped by prov itself (rare:
    the ids of this library are NCName-safe)."""
    from prov.identifier import Namespace

    prefix, colon, local = name.partition(":")
    if not colon:
        return name
    qualified = Namespace(prefix, namespaces.get(prefix, "urn:unknown:"))[local]
    written: str = qualified.provn_bare_representation()
    return written


class _Strings(dict[str, str]):
    """String literals, remembered for the document: roles, statuses, labels recur."""

    def __missing__(self, value: str) -> str:
        literal = self[value] = _string(value)
        return literal


# Each kind's formal attributes, and whether each is a time
_FORMAL = {kind: [(key, key in TIMES) for key in keys] for kind, keys in FORMAL.items()}


def _record(record: Record, names: _Names, strings: _Strings) -> str:
    items = []
    relation_id = ""
    if record.id is not None:
        if record.kind in ELEMENTS:
            items.append(names[record.id])
        else:
            relation_id = names[record.id] + "; "
    formal = record.formal
    for key, time in _FORMAL[record.kind]:
        value = formal.get(key)
        if value is None:
            items.append("-")
        elif not time:
            items.append(names[str(value)])
        else:
            items.append(datetime_text(value) if isinstance(value, datetime) else str(value))
    attributes = record.attributes
    if attributes:
        if len(attributes) > 1 and len({key for key, _ in attributes}) < len(attributes):
            attributes = grouped(attributes)
        pairs = ", ".join(
            [
                f"{names[key]}={strings[value] if type(value) is str else _value(value, names)}"
                for key, value in attributes
            ]
        )
        items.append(f"[{pairs}]")
    return f"{record.kind}({relation_id}{', '.join(items)})"


def _value(value: Any, names: _Names) -> str:
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is QName:
        return f"'{names[value]}'"
    if kind is bool:
        return f'"{"true" if value else "false"}" %% xsd:boolean'
    if kind is int:
        datatype = int_type(value)
        return str(value) if datatype == "xsd:int" else f'"{value}" %% {datatype}'
    if kind is float:
        return f'"{double_text(value)}" %% xsd:double'
    if isinstance(value, datetime):
        return f'"{datetime_text(value)}" %% xsd:dateTime'
    if isinstance(value, str):
        return _string(value)
    return str(value)


def _string(value: str) -> str:
    """A PROV-N string literal: triple-quoted when it holds a line feed."""
    text = value.replace("\\", "\\\\").replace('"', '\\"')
    if "\n" in text:
        return f'"""{text}"""'
    return '"' + text.replace("\r", "\\r") + '"'

"""Serializations of a provenance document, one module per format family."""

from __future__ import annotations

from prov.model import ProvDocument

FORMATS = {
    "PROV-JSON": ("json", "application/json"),
    "PROV-N": ("provn", "text/provenance-notation; charset=utf-8"),
    "PROV-XML": ("xml", "application/xml"),
}


def serialize(doc: ProvDocument, response_format: str) -> tuple[bytes, str]:
    """The document in one of FORMATS, and its content type."""
    name, content_type = FORMATS[response_format]
    text = doc.serialize(format=name)
    assert isinstance(text, str)
    return text.encode(), content_type

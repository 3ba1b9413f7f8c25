"""Serializations of a provenance document: PROV-JSON, PROV-N, PROV-XML (by prov 3),
PROV-VOTABLE and PROV-SVG."""

from __future__ import annotations

from collections.abc import Callable

from prov.model import ProvDocument

from provenance.serializers.graph import GraphvizMissing, to_svg
from provenance.serializers.votable import to_votable


def _prov(name: str) -> Callable[[ProvDocument], bytes]:
    def write(doc: ProvDocument) -> bytes:
        text = doc.serialize(format=name)
        assert isinstance(text, str)
        return text.encode()

    return write


FORMATS: dict[str, tuple[Callable[[ProvDocument], bytes], str]] = {
    "PROV-JSON": (_prov("json"), "application/json"),
    "PROV-N": (_prov("provn"), "text/provenance-notation; charset=utf-8"),
    "PROV-XML": (_prov("xml"), "application/xml"),
    "PROV-VOTABLE": (to_votable, "application/x-votable+xml"),
    "PROV-SVG": (to_svg, "image/svg+xml"),
}

__all__ = ["FORMATS", "GraphvizMissing", "serialize"]


def serialize(doc: ProvDocument, response_format: str) -> tuple[bytes, str]:
    """The document in one of FORMATS, and its content type."""
    write, content_type = FORMATS[response_format]
    return write(doc), content_type

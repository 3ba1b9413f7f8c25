"""Serializations of a provenance document: PROV-JSON, PROV-N, PROV-XML and PROV-VOTABLE
written directly (prov 3 reads each back equal), PROV-SVG by graphviz.

A format whose program is missing (PROV-SVG without graphviz's ``dot``) raises
FormatUnavailable when it is asked for, as does a graph too large to draw
(GraphTooLarge); the other formats are not affected.
"""

from __future__ import annotations

from collections.abc import Callable

from provenance.document import Document
from provenance.serializers.graph import (
    FormatUnavailable,
    GraphTooLarge,
    GraphvizMissing,
    to_svg,
)
from provenance.serializers.provjson import to_json
from provenance.serializers.provn import to_provn
from provenance.serializers.provxml import to_provxml
from provenance.serializers.votable import to_votable

FORMATS: dict[str, tuple[Callable[[Document], bytes], str]] = {
    "PROV-JSON": (to_json, "application/json"),
    "PROV-N": (to_provn, "text/provenance-notation; charset=utf-8"),
    "PROV-XML": (to_provxml, "application/xml"),
    "PROV-VOTABLE": (to_votable, "application/x-votable+xml"),
    "PROV-SVG": (to_svg, "image/svg+xml"),
}

__all__ = ["FORMATS", "FormatUnavailable", "GraphTooLarge", "GraphvizMissing", "serialize"]


def serialize(doc: Document, response_format: str) -> tuple[bytes, str]:
    """Serialize a document in one of FORMATS.

    Args:
        doc: The provenance document (from `provenance.document.build`).
        response_format: A key of FORMATS: PROV-JSON, PROV-N, PROV-XML, PROV-VOTABLE
            or PROV-SVG.

    Returns:
        The serialized document and its content type.

    Raises:
        KeyError: `response_format` is not a key of FORMATS.
        FormatUnavailable: The format needs a program or package that is missing.
    """
    write, content_type = FORMATS[response_format]
    return write(doc), content_type

"""PROV-SVG: the provenance graph drawn by graphviz's `dot` (through prov.dot and pydot)."""

from __future__ import annotations

import shutil

from prov.dot import prov_to_dot

from provenance.document import Document, to_prov


class GraphvizMissing(Exception):
    """The `dot` program of graphviz is not installed: no SVG can be drawn."""


def to_svg(doc: Document) -> bytes:
    if shutil.which("dot") is None:
        raise GraphvizMissing("graphviz's dot program is not installed on the server")
    svg = prov_to_dot(to_prov(doc), use_labels=True).create(format="svg")
    assert isinstance(svg, bytes)
    return svg

"""PROV-SVG: the provenance graph drawn by graphviz's `dot` (through prov.dot and pydot).

prov.dot, pydot and networkx (prov's ``dot`` extra) are imported only when a graph is
drawn, so the library, and every other format, works without them.
"""

from __future__ import annotations

import shutil

from provenance.document import Document, to_prov

__all__ = ["FormatUnavailable", "GraphvizMissing", "to_svg"]


class FormatUnavailable(Exception):
    """A format cannot be written here: a program or Python package it needs is missing.

    The message names what is missing.
    """


class GraphvizMissing(FormatUnavailable):
    """The `dot` program of graphviz is not installed: no SVG can be drawn."""


def _missing_package(error: ImportError) -> str:
    """The top-level name of the module whose import failed, following the causes
    (prov.dot re-raises the ImportError of pydot or networkx as its own)."""
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        name = getattr(cause, "name", None)
        if name:
            return str(name).partition(".")[0]
        cause = cause.__cause__ or cause.__context__
    return str(error)


def to_svg(doc: Document) -> bytes:
    """Draw the document as an SVG graph.

    Args:
        doc: The provenance document.

    Returns:
        The SVG image.

    Raises:
        FormatUnavailable: A Python package of ``prov[dot]`` (pydot, networkx) is missing.
        GraphvizMissing: The ``dot`` program of graphviz is not on PATH.
    """
    try:
        from prov.dot import prov_to_dot
    except ImportError as exc:
        package = _missing_package(exc)
        raise FormatUnavailable(
            f"PROV-SVG needs the Python package {package} (pip install 'prov[dot]')"
        ) from exc
    if shutil.which("dot") is None:
        raise GraphvizMissing("PROV-SVG needs the dot program of graphviz, not found on PATH")
    svg = prov_to_dot(to_prov(doc), use_labels=True).create(format="svg")
    assert isinstance(svg, bytes)
    return svg

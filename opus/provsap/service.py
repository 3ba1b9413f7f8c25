"""ProvSAP rules: parameters, identifiers, formats; the walk and the document come from
the provenance library."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from opus.auth import Caller, visible_nodes
from opus.errors import NotFound, ParameterError, Unavailable
from opus.ids import NAMESPACES, entity_qname, is_id, job_qname
from opus.jobdefs.params import whole_number
from opus.store.db import Database
from provenance import document, query
from provenance.serializers import FORMATS, FormatUnavailable, serialize

DEFAULT_FORMAT = "PROV-JSON"


@dataclass(frozen=True)
class Request:
    ids: list[str]
    depth: int | None  # None: ALL
    direction: query.Direction
    model: document.Model
    agents: bool
    response_format: str


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise ParameterError(name, "given more than once")
    return values[0].strip() if values else None


def parse(params: Mapping[str, Sequence[str]], default_depth: str = "1") -> Request:
    """ProvSAP parameters (names already upper-cased; unknown ones ignored)."""
    ids = [v.strip() for v in params.get("ID", []) if v.strip()]
    depth_text = (_one(params, "DEPTH") or default_depth).upper()
    if depth_text == "ALL":
        depth = None
    elif (number := whole_number(depth_text, 10_000)) is not None:
        depth = number
    else:
        raise ParameterError("DEPTH", f"{depth_text!r} is not a whole number (0 to 10000) or ALL")
    direction = (_one(params, "DIRECTION") or "BACK").upper()
    if direction not in ("BACK", "FORTH"):
        raise ParameterError("DIRECTION", f"{direction!r} is not BACK or FORTH")
    model = (_one(params, "MODEL") or "IVOA").upper()
    if model not in ("IVOA", "W3C"):
        raise ParameterError("MODEL", f"{model!r} is not IVOA or W3C")
    agent = (_one(params, "AGENT") or "YES").upper()
    if agent not in ("YES", "NO", "TRUE", "FALSE"):
        raise ParameterError("AGENT", f"{agent!r} is not YES or NO")
    response_format = (_one(params, "RESPONSEFORMAT") or DEFAULT_FORMAT).upper()
    if response_format not in FORMATS:
        raise ParameterError(
            "RESPONSEFORMAT", f"{response_format!r} is not one of {', '.join(FORMATS)}"
        )
    return Request(
        ids,
        depth,
        cast(query.Direction, direction),
        cast(document.Model, model),
        agent in ("YES", "TRUE"),
        response_format,
    )


class ProvenanceService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _resolve(self, ids: list[str], allowed: query.Allowed | None) -> list[str]:
        """Qualified names of the records the IDs name: qualified, or a bare job/entity id;
        one the caller may not see is unknown, as one that does not exist."""
        candidates: list[str] = []
        for value in ids:
            candidates += [job_qname(value), entity_qname(value)] if is_id(value) else [value]
        with self.db.read() as conn:
            known = query.known_ids(conn, candidates, allowed)
        unknown = [
            v
            for v in ids
            if not ({job_qname(v), entity_qname(v)} & known if is_id(v) else v in known)
        ]
        if unknown:
            raise NotFound(f"no provenance record for ID {', '.join(map(repr, unknown))}")
        return [c for c in candidates if c in known]

    def document(self, caller: Caller, request: Request) -> tuple[bytes, str]:
        """The lineage asked for, walked as far as the caller may see."""
        if not request.ids:
            raise ParameterError("ID", "missing: give the id of an entity, activity or job")
        allowed = visible_nodes(caller)
        starts = self._resolve(request.ids, allowed)
        with gc_paused(), self.db.read() as conn:
            chosen = query.select_records(
                conn, starts, request.depth, request.direction, request.agents, allowed
            )
            doc = document.build(conn, chosen, NAMESPACES, request.model)
            return _serialize(doc, request.response_format)

    def job_document(self, job_id: str, request: Request) -> tuple[bytes, str]:
        """A job's activity with what it used, generated and who ran it (one hop each way)."""
        start = job_qname(job_id)
        with self.db.read() as conn:
            if not query.known_ids(conn, [start]):
                raise NotFound(f"job {job_id} has no provenance yet (it has not run)")
            chosen = query.activity_records(conn, start, request.agents)
            doc = document.build(conn, chosen, NAMESPACES, request.model)
        return _serialize(doc, request.response_format)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a large document is built: its many new
    objects would trigger full collections that cost a third of the time; reference
    counting still frees everything, and the collector runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _serialize(doc: document.Document, response_format: str) -> tuple[bytes, str]:
    try:
        return serialize(doc, response_format)
    except FormatUnavailable as exc:
        raise Unavailable(f"RESPONSEFORMAT={response_format}: {exc}") from None

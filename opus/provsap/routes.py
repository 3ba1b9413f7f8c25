"""HTTP of provenance: /provsap and /rest/{jobdef}/{id}/provenance."""

from __future__ import annotations

import bottle

from opus.provsap.service import ProvenanceService, parse
from opus.uws.routes import router
from opus.uws.service import JobService


def _params() -> dict[str, list[str]]:
    """Query and form parameters, names upper-cased (ProvSAP names are case-insensitive)."""
    found: dict[str, list[str]] = {}
    for source in (bottle.request.query, bottle.request.forms):
        for key, value in source.decode().allitems():
            found.setdefault(key.upper(), []).append(value)
    return found


def _answer(body: bytes, content_type: str) -> bytes:
    bottle.response.content_type = content_type
    return body


def install(app: bottle.Bottle, provenance: ProvenanceService, jobs: JobService) -> None:
    route = router(app)

    @route("/provsap")
    @route("/provsap", "POST")
    def provsap() -> bytes:
        return _answer(*provenance.document(parse(_params())))

    @route("/rest/<jobdef>/<job_id>/provenance")
    def job_provenance(jobdef: str, job_id: str) -> bytes:
        jobs.job(jobdef, job_id)  # 404 for an unknown job
        return _answer(*provenance.job_document(job_id, parse(_params())))

"""HTTP of provenance: /provsap, /rest/{jobdef}/{id}/provenance, /prov/{local}, where
every `opus:` name of a document resolves, and POST /prov/invalidate (administrators)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bottle

from opus.auth import Caller
from opus.http import all_params, answer, base_url, caller, router, see_other
from opus.provsap import invalidation
from opus.provsap.service import ProvenanceService, parse


def install(
    app: bottle.Bottle,
    provenance: ProvenanceService,
    find_job: Callable[[Caller, str, str], object],
) -> None:
    """`find_job(caller, jobdef, job_id)` raises NotFound for a job the caller may not see."""
    route = router(app)

    @route("/provsap")
    @route("/provsap", "POST")
    def provsap() -> bytes:
        return answer(*provenance.document(caller(), parse(all_params()), base_url()))

    @route("/rest/<jobdef>/<job_id>/provenance")
    def job_provenance(jobdef: str, job_id: str) -> bytes:
        who = caller()
        find_job(who, jobdef, job_id)
        return answer(*provenance.job_document(who, job_id, parse(all_params()), base_url()))

    invalidations = invalidation.InvalidationService(provenance.db, provenance.public_url)

    @route("/prov/invalidate", "POST")
    def invalidate() -> dict[str, Any]:
        """ID, REASON: the invalidation recorded; what is downstream, as JSON."""
        given, reason = invalidation.parse(all_params())
        report = invalidations.invalidate(caller(), given, reason, base_url())
        return report.as_json(invalidations.base(base_url()))

    @route("/prov/<local>")
    def resolve(local: str) -> bottle.HTTPResponse:
        return see_other(provenance.locate(caller(), local, base_url()))

"""An async TAP query as a UWS job: the service the `tap` definition runs (inside the
runner, see `opus.execution.service_call`), with the visibility of the job's owner."""

from __future__ import annotations

import time

from opus.auth import Identities
from opus.execution.failures import JobFailure
from opus.execution.service_call import ServiceJob
from opus.tap.results import FORMATS
from opus.tap.service import TapError, TapService, tap_request

RESULT = "result"  # the result's name: /tap/async/<id>/results/result


def run(job: ServiceJob) -> dict[str, str]:
    """Run the job's query; the result is the file `result` of the working directory."""
    identities = Identities(job.settings, job.db)
    caller = identities.load(job.owner) if job.owner else identities.anonymous
    service = TapService(job.settings, job.db)
    base = service.base(
        job.values.get("BASE_URL") or f"http://{job.settings.host}:{job.settings.port}"
    )
    try:
        request = tap_request(list(job.values.items()), job.settings)
        files = job.inputs.get("tap_upload", [])
        if len(files) != len(request.uploads):
            raise TapError(f"UPLOAD names {len(request.uploads)} table(s); {len(files)} came")
        tables = service.tables(
            [
                (name, path.read_bytes())
                for (name, _), path in zip(request.uploads, files, strict=True)
            ]
        )
        timeout = max(0.1, job.deadline - time.monotonic())
        body = service.execute(caller, request, tables, base, timeout)
    except TapError as exc:
        raise JobFailure(str(exc)) from None
    (job.workdir / RESULT).write_bytes(body)
    return {RESULT: FORMATS[request.format]}

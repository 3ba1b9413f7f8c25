"""The server's limits on what a job may ask for: its execution duration and its lifetime."""

from __future__ import annotations

from datetime import datetime, timedelta

from opus.auth import Limits
from opus.config import Settings
from opus.errors import ParameterError
from opus.jobdefs.model import JobDefinition
from opus.timeutil import parse_datetime


def execution_duration(limits: Limits, jobdef: JobDefinition, raw: str | None) -> int:
    """Seconds a job may run: what it asks (or its definition's), capped by the caller's
    limit (the server's, or one set for the user or its groups)."""
    limit = limits.max_execution_duration
    wanted = jobdef.execution_duration or limit
    if raw is not None:
        try:
            wanted = int(raw.strip())
        except ValueError:
            raise ParameterError(
                "EXECUTIONDURATION", f"{raw!r} is not a whole number of seconds"
            ) from None
        if wanted < 0:
            raise ParameterError("EXECUTIONDURATION", f"{raw!r} is negative")
    # 0 asks for no limit: this server always has one, and says so by the value it keeps.
    return limit if wanted == 0 else min(wanted, limit)


def destruction(settings: Settings, limits: Limits, raw: str | None, now: datetime) -> datetime:
    """When a job is destroyed: what it asks (or the default), at most the caller's maximum."""
    latest = now + timedelta(days=limits.max_destruction_days)
    if raw is None:
        return min(now + timedelta(days=settings.default_destruction_days), latest)
    try:
        wanted = parse_datetime(raw)
    except ValueError as exc:
        raise ParameterError("DESTRUCTION", str(exc)) from None
    return min(wanted, latest)


def quote(jobdef: JobDefinition, now: datetime) -> datetime | None:
    """When a job queued now is expected to end, if its definition says how long it takes."""
    return now + timedelta(seconds=jobdef.quote) if jobdef.quote is not None else None

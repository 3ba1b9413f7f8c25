"""UTC times as UWS writes and reads them (ISO 8601)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Naive UTC now, to the millisecond: the store keeps times exactly as UWS shows them
    (so that AFTER=<a job's creationTime> does not list that job again)."""
    now = datetime.now(UTC)
    return now.replace(tzinfo=None, microsecond=now.microsecond // 1000 * 1000)


def parse_datetime(text: str) -> datetime:
    """ISO 8601 (date, or date and time, optional zone) to naive UTC; ValueError says why."""
    raw = text.strip()
    candidate = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        example = "2026-01-31T12:00:00Z"
        raise ValueError(f"{text!r} is not an ISO 8601 date-time (e.g. {example})") from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None
    return value


def format_datetime(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.isoformat(timespec="milliseconds") + "Z"

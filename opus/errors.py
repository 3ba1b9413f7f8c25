"""Errors the services raise; the routes turn each into its HTTP status and a text message."""

from __future__ import annotations


class OpusError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(OpusError):
    status = 400


class ParameterError(BadRequest):
    """A request parameter is wrong: the message names it and says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"parameter {name}: {reason}")
        self.name = name
        self.reason = reason


class Unauthorized(OpusError):
    status = 401


class Forbidden(OpusError):
    status = 403


class NotFound(OpusError):
    status = 404


class Conflict(OpusError):
    """The request contradicts what is recorded (an entity invalidated already)."""

    status = 409


class TooManyJobs(OpusError):
    status = 429


class Unavailable(OpusError):
    status = 503

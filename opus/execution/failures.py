"""How a job fails inside its runner: the two exceptions the runner turns into ERROR."""

from __future__ import annotations


class JobFailure(Exception):
    """The job ends in ERROR with this message."""


class Shutdown(BaseException):
    """The runner's process was asked to stop (SIGTERM) while a job ran."""

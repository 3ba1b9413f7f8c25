"""The UWS 1.1 phase vocabulary: the phases and the sets every rule is written with.

Which phase a store transition may leave is declared here too (TRANSITIONS), so the
rules of the job lifecycle read in one place; `opus.store.jobs` applies them.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ABORTABLE",
    "ACTIVE",
    "BLOCKING",
    "ENDINGS",
    "FINAL",
    "PHASES",
    "RUNNABLE",
    "TRANSITIONS",
    "UNDER_WAY",
    "Phase",
]


class Phase(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"
    UNKNOWN = "UNKNOWN"
    HELD = "HELD"
    SUSPENDED = "SUSPENDED"
    ARCHIVED = "ARCHIVED"


PHASES: tuple[Phase, ...] = tuple(Phase)
# Not yet ended: the job may still change.
ACTIVE = frozenset({Phase.PENDING, Phase.QUEUED, Phase.EXECUTING, Phase.HELD, Phase.SUSPENDED})
# Ended: nothing changes any more but its destruction.
FINAL = frozenset({Phase.COMPLETED, Phase.ERROR, Phase.ABORTED, Phase.ARCHIVED})
# UWS 1.1 WAIT blocks only while a job is in one of these (section 2.2.1.2).
BLOCKING = frozenset({Phase.PENDING, Phase.QUEUED, Phase.EXECUTING})
# On its way to a runner or running: PHASE=RUN changes nothing, and these count against
# a user's limit of active jobs.
UNDER_WAY = frozenset({Phase.QUEUED, Phase.EXECUTING})
# PHASE=ABORT is accepted from these.
ABORTABLE = ACTIVE
# PHASE=RUN queues a job from these.
RUNNABLE = frozenset({Phase.PENDING, Phase.HELD})
# How a runner ends the job it runs.
ENDINGS = frozenset({Phase.COMPLETED, Phase.ERROR, Phase.ABORTED})

# Each named store transition: the phases it may leave, and the phase it goes to.
TRANSITIONS: dict[str, tuple[frozenset[Phase], Phase | None]] = {
    "queue": (RUNNABLE, Phase.QUEUED),
    "claim": (frozenset({Phase.QUEUED}), Phase.EXECUTING),
    "finish": (frozenset({Phase.EXECUTING}), None),  # to one of ENDINGS
    "abort": (ABORTABLE, Phase.ABORTED),
    "requeue_lost": (frozenset({Phase.EXECUTING}), Phase.QUEUED),
    "fail_lost": (frozenset({Phase.EXECUTING}), Phase.ERROR),
}

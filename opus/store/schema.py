"""The tables of the job store.

Declarative classes give readable models; the hot paths use their ``__table__``
with SQLAlchemy Core, which costs a fraction of ORM object loading.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    jobdef: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str | None] = mapped_column(String(256))
    owner: Mapped[str | None] = mapped_column(String(256))
    phase: Mapped[str] = mapped_column(String(16))
    creation_time: Mapped[datetime] = mapped_column(DateTime)
    start_time: Mapped[datetime | None] = mapped_column(DateTime)
    end_time: Mapped[datetime | None] = mapped_column(DateTime)
    execution_duration: Mapped[int] = mapped_column(Integer)
    destruction: Mapped[datetime] = mapped_column(DateTime)
    quote: Mapped[datetime | None] = mapped_column(DateTime)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(256))
    # a dispatch failed (broker unreachable): the sweep sends it again; written only then,
    # so that the common path costs no extra commit
    dispatch_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    heartbeat: Mapped[datetime | None] = mapped_column(DateTime)  # its runner was alive then
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a runner claimed it
    # the job that made this one as one of its chunks (it completes when they have)
    parent_id: Mapped[str | None] = mapped_column(String(32))
    # what a completed deterministic job computed (definition, values, input checksums):
    # a later job of the same key reuses its results
    reuse_key: Mapped[str | None] = mapped_column(String(64))
    # the schedule that made this job at one of its ticks
    schedule_id: Mapped[str | None] = mapped_column(String(32))
    # the job whose run informed this one (PROV wasInformedBy): a schedule's previous run
    informed_by: Mapped[str | None] = mapped_column(String(32))
    # the job this one runs again, after an input of that one was invalidated
    replaces: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        Index("ix_jobs_list", "jobdef", "creation_time"),
        Index("ix_jobs_phase", "phase"),
        Index("ix_jobs_destruction", "destruction"),
        Index("ix_jobs_owner", "owner", "phase"),
        Index("ix_jobs_parent", "parent_id"),
        Index("ix_jobs_reuse", "reuse_key"),
        Index("ix_jobs_schedule", "schedule_id", "creation_time"),
    )


class JobParameter(Base):
    """One value of a job parameter; a repeated parameter has several rows."""

    __tablename__ = "job_parameters"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, default=0)
    value: Mapped[str] = mapped_column(Text)
    by_reference: Mapped[bool] = mapped_column(Boolean, default=False)


class Entity(Base):
    """A stored file: an upload, a download or a job result."""

    __tablename__ = "entities"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(256))  # result id, or the upload's role
    role: Mapped[str] = mapped_column(String(128))  # the Generated or Used name it fills
    origin: Mapped[str] = mapped_column(String(16))  # result | upload | download
    path: Mapped[str] = mapped_column(Text)  # relative to the data dir
    file_name: Mapped[str] = mapped_column(String(256))
    content_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    location: Mapped[str | None] = mapped_column(Text)  # source URL of a download
    creation_time: Mapped[datetime] = mapped_column(DateTime)


class JobInput(Base):
    """A used entity of a job: which stored entity plays which role."""

    __tablename__ = "job_inputs"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, default=0)
    entity_id: Mapped[str] = mapped_column(String(40), index=True)


class Schedule(Base):
    """A job definition and its values, run at each tick of an interval or a cron
    expression on behalf of its owner."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    jobdef: Mapped[str] = mapped_column(String(128))
    request: Mapped[str] = mapped_column(Text)  # JSON: {"fields": [[name, value], ...], "base_url"}
    every: Mapped[float | None] = mapped_column(Float)  # seconds between ticks, or
    cron: Mapped[str | None] = mapped_column(String(128))  # a cron expression (UTC)
    next_run: Mapped[datetime] = mapped_column(DateTime, index=True)
    last_job_id: Mapped[str | None] = mapped_column(String(32))
    created: Mapped[datetime] = mapped_column(DateTime)


class Lease(Base):
    """A lease held by one process at a time (the sweeps'): it holds it while it renews it
    before `expires`; a holder that dies loses it then."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    expires: Mapped[datetime] = mapped_column(DateTime)


jobs = Job.__table__
schedules = Schedule.__table__
leases = Lease.__table__
job_parameters = JobParameter.__table__
entities = Entity.__table__
job_inputs = JobInput.__table__


class User(Base):
    """A person or program with API tokens; limits left empty fall back to its groups'."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime)
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    max_execution_duration: Mapped[int | None] = mapped_column(Integer)  # seconds
    max_destruction_days: Mapped[float | None] = mapped_column(Float)


class Group(Base):
    """A set of users (an AMPEL channel): jobs are shared with it, definitions restricted
    to it, and its data rights (comma-separated) reach its members' jobs."""

    __tablename__ = "groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    rights: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime)
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    max_execution_duration: Mapped[int | None] = mapped_column(Integer)
    max_destruction_days: Mapped[float | None] = mapped_column(Float)


class Membership(Base):
    __tablename__ = "memberships"

    user: Mapped[str] = mapped_column(String(64), primary_key=True)
    group: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Token(Base):
    """An API token `opus_<key>.<secret>`: the key finds the row, only the secret's hash
    is kept (tokens are random, so a fast hash is enough)."""

    __tablename__ = "tokens"

    key: Mapped[str] = mapped_column(String(16), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime)
    last_used: Mapped[datetime | None] = mapped_column(DateTime)


class JobShare(Base):
    """A group a job is shared with (the SHARE control parameter)."""

    __tablename__ = "job_shares"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    group: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


users = User.__table__
groups = Group.__table__
memberships = Membership.__table__
tokens = Token.__table__
job_shares = JobShare.__table__

"""Periodic jobs and the sweeps' lease: `schedules` (a definition and its values run at
each tick), `leases` (which process runs the sweeps), and on `jobs` what made a job
beside a request: its schedule (`schedule_id`), the run that informed it (`informed_by`)
and the job it runs again after an invalidation (`replaces`). Jobs of earlier releases
have none of these.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 14:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("schedule_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("informed_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("replaces", sa.String(32), nullable=True))
    op.create_index("ix_jobs_schedule", "jobs", ["schedule_id", "creation_time"])
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("jobdef", sa.String(128), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("every", sa.Float, nullable=True),
        sa.Column("cron", sa.String(128), nullable=True),
        sa.Column("next_run", sa.DateTime, nullable=False),
        sa.Column("last_job_id", sa.String(32), nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_index("ix_schedules_next_run", "schedules", ["next_run"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("expires", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_schedules_next_run", table_name="schedules")
    op.drop_table("schedules")
    op.drop_index("ix_jobs_schedule", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("replaces")
        batch.drop_column("informed_by")
        batch.drop_column("schedule_id")

"""Jobs made as chunks of another (`parent_id`) and the key of what a completed
deterministic job computed (`reuse_key`), for the science definitions' fan-out and reuse.
Jobs of earlier releases have neither: they are no one's chunks and are not reused.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("reuse_key", sa.String(64), nullable=True))
    op.create_index("ix_jobs_parent", "jobs", ["parent_id"])
    op.create_index("ix_jobs_reuse", "jobs", ["reuse_key"])


def downgrade() -> None:
    op.drop_index("ix_jobs_reuse", table_name="jobs")
    op.drop_index("ix_jobs_parent", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reuse_key")
        batch.drop_column("parent_id")

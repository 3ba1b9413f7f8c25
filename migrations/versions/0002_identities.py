"""Identities: users, groups, their memberships, API tokens, and jobs shared with groups.

New tables, and an index on jobs by owner (a user's active jobs are counted against
their limit); the rows of 0001 are not touched.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = [  # name, table, columns
    ("ix_memberships_group", "memberships", ["group"]),
    ("ix_tokens_user", "tokens", ["user"]),
    ("ix_job_shares_group", "job_shares", ["group"]),
    ("ix_jobs_owner", "jobs", ["owner", "phase"]),
]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("max_active_jobs", sa.Integer(), nullable=True),
        sa.Column("max_execution_duration", sa.Integer(), nullable=True),
        sa.Column("max_destruction_days", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "groups",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("rights", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("max_active_jobs", sa.Integer(), nullable=True),
        sa.Column("max_execution_duration", sa.Integer(), nullable=True),
        sa.Column("max_destruction_days", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "memberships",
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("group", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("user", "group"),
    )
    op.create_table(
        "tokens",
        sa.Column("key", sa.String(16), nullable=False),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("last_used", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "job_shares",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("group", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "group"),
    )
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for table in ("job_shares", "tokens", "memberships", "groups", "users"):
        op.drop_table(table)

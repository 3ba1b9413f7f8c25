"""The tables of the first release: jobs, parameters, entities, inputs and provenance.

What `create_all` made before migrations existed, so a database of that release counts as
being at this revision (opus.store.migrate.LEGACY) and is only stamped.

Revision ID: 0001
Revises:
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 160  # a provenance identifier (a qualified name), as provenance.store.ID was then

INDEXES = [  # name, table, columns
    ("ix_jobs_list", "jobs", ["jobdef", "creation_time"]),
    ("ix_jobs_phase", "jobs", ["phase"]),
    ("ix_jobs_destruction", "jobs", ["destruction"]),
    ("ix_entities_job_id", "entities", ["job_id"]),
    ("ix_job_inputs_entity_id", "job_inputs", ["entity_id"]),
    ("ix_prov_used_entity", "prov_used", ["entity_id"]),
    ("ix_prov_generations_activity", "prov_generations", ["activity_id"]),
    ("ix_prov_derivations_used", "prov_derivations", ["used_id"]),
]


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("jobdef", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(256), nullable=True),
        sa.Column("owner", sa.String(256), nullable=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("creation_time", sa.DateTime(), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=True),
        sa.Column("end_time", sa.DateTime(), nullable=True),
        sa.Column("execution_duration", sa.Integer(), nullable=False),
        sa.Column("destruction", sa.DateTime(), nullable=False),
        sa.Column("quote", sa.DateTime(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_type", sa.String(16), nullable=True),
        sa.Column("worker", sa.String(256), nullable=True),
        sa.Column("dispatch_failed", sa.Boolean(), nullable=False),
        sa.Column("heartbeat", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "job_parameters",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("by_reference", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "name", "position"),
    )
    op.create_table(
        "entities",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("role", sa.String(128), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("file_name", sa.String(256), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("creation_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "job_inputs",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "role", "position"),
    )

    op.create_table(
        "prov_activity_descriptions",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("type", sa.String(128), nullable=True),
        sa.Column("subtype", sa.String(128), nullable=True),
        sa.Column("doculink", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "prov_activities",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("start_time", sa.DateTime(), nullable=True),
        sa.Column("end_time", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("description_id", sa.String(ID), nullable=True),
        sa.Column("context_id", sa.String(ID), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "prov_entities",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("content_type", sa.String(128), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("generated_at", sa.DateTime(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "prov_agents",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("email", sa.String(256), nullable=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "prov_used",
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("entity_id", sa.String(ID), nullable=False),
        sa.Column("role", sa.String(128), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("activity_id", "entity_id", "role"),
    )
    op.create_table(
        "prov_generations",
        sa.Column("entity_id", sa.String(ID), nullable=False),
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("role", sa.String(128), nullable=True),
        sa.Column("time", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("entity_id"),
    )
    op.create_table(
        "prov_associations",
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("agent_id", sa.String(ID), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("activity_id", "agent_id", "role"),
    )
    op.create_table(
        "prov_derivations",
        sa.Column("generated_id", sa.String(ID), nullable=False),
        sa.Column("used_id", sa.String(ID), nullable=False),
        sa.Column("activity_id", sa.String(ID), nullable=True),
        sa.PrimaryKeyConstraint("generated_id", "used_id"),
    )
    op.create_table(
        "prov_parameters",
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("datatype", sa.String(32), nullable=True),
        sa.Column("unit", sa.String(64), nullable=True),
        sa.Column("ucd", sa.String(128), nullable=True),
        sa.Column("min", sa.String(64), nullable=True),
        sa.Column("max", sa.String(64), nullable=True),
        sa.Column("options", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("activity_id", "name"),
    )
    op.create_table(
        "prov_contexts",
        sa.Column("context_id", sa.String(ID), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("context_id", "key"),
    )

    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for table in (
        "prov_contexts",
        "prov_parameters",
        "prov_derivations",
        "prov_associations",
        "prov_generations",
        "prov_used",
        "prov_agents",
        "prov_entities",
        "prov_activities",
        "prov_activity_descriptions",
        "job_inputs",
        "entities",
        "job_parameters",
        "jobs",
    ):
        op.drop_table(table)

"""Role descriptions: the roles an activity description uses and generates entities in
(ProvDM UsageDescription and GenerationDescription, with their EntityDescription), which
ProvTAP exposes. Activities recorded before keep no roles: their definitions' roles are
written when a job of the definition ends next.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 19:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("prov_usage_descriptions", "prov_generation_descriptions")


def upgrade() -> None:
    for name in TABLES:
        op.create_table(
            name,
            sa.Column("description_id", sa.String(160), nullable=False),
            sa.Column("role", sa.String(128), nullable=False),
            sa.Column("description", sa.Text(), nullable=True),
            sa.Column("multiplicity", sa.String(16), nullable=True),
            sa.Column("content_type", sa.String(128), nullable=True),
            sa.PrimaryKeyConstraint("description_id", "role"),
        )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)

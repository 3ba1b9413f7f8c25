"""Invalidations and re-runs in provenance: `prov_invalidations` (PROV's wasInvalidatedBy:
an entity, the invalidation activity, when; the activity's reason and agent are rows of
`prov_activities` and `prov_associations`), and on `prov_activities` the activity a
re-run replaces (`replaces`). Activities of earlier releases replace none.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 160  # provenance.store.ID, as it was at this revision


def upgrade() -> None:
    with op.batch_alter_table("prov_activities") as batch:
        batch.add_column(sa.Column("replaces", sa.String(ID), nullable=True))
    op.create_table(
        "prov_invalidations",
        sa.Column("entity_id", sa.String(ID), primary_key=True),
        sa.Column("activity_id", sa.String(ID), nullable=False),
        sa.Column("time", sa.DateTime, nullable=True),
    )
    op.create_index("ix_prov_invalidations_activity", "prov_invalidations", ["activity_id"])


def downgrade() -> None:
    op.drop_index("ix_prov_invalidations_activity", table_name="prov_invalidations")
    op.drop_table("prov_invalidations")
    with op.batch_alter_table("prov_activities") as batch:
        batch.drop_column("replaces")

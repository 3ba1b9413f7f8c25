"""Communications and activities' own attributes in provenance: `prov_communications`
(PROV's wasInformedBy: an informed activity and its informant, e.g. a schedule's run and
the run before it; the key covers the informed side, an index the informant side) and
`prov_activity_attributes` (an activity's attributes of the recorder's vocabulary, such
as the schedule that made a job). Activities of earlier releases have neither.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 160  # provenance.store.ID, as it was at this revision


def upgrade() -> None:
    op.create_table(
        "prov_communications",
        sa.Column("informed", sa.String(ID), primary_key=True),
        sa.Column("informant", sa.String(ID), primary_key=True),
    )
    op.create_index("ix_prov_communications_informant", "prov_communications", ["informant"])
    op.create_table(
        "prov_activity_attributes",
        sa.Column("activity_id", sa.String(ID), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("prov_activity_attributes")
    op.drop_index("ix_prov_communications_informant", table_name="prov_communications")
    op.drop_table("prov_communications")

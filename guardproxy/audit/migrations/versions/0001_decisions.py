"""decisions and their categories

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(128)),
        sa.Column("api", sa.String(32), nullable=False),
        sa.Column("guard", sa.String(128)),
        sa.Column("model", sa.String(256)),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("input_status", sa.String(16), nullable=False),
        sa.Column("output_status", sa.String(16), nullable=False),
        sa.Column("input_ms", sa.Float),
        sa.Column("output_ms", sa.Float),
        sa.Column("upstream_ms", sa.Float),
        sa.Column("total_ms", sa.Float),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("content", sa.JSON),
    )
    op.create_index("ix_decisions_time", "decisions", ["time"])
    op.create_index("ix_decisions_tenant_time", "decisions", ["tenant", "time"])
    op.create_index("ix_decisions_action_time", "decisions", ["action", "time"])
    op.create_index("ix_decisions_guard_time", "decisions", ["guard", "time"])
    op.create_index("ix_decisions_api_time", "decisions", ["api", "time"])
    op.create_table(
        "decision_categories",
        sa.Column(
            "request_id",
            sa.String(64),
            sa.ForeignKey("decisions.request_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("direction", sa.String(8), primary_key=True),
        sa.Column("category", sa.String(128), primary_key=True),
    )
    op.create_index(
        "ix_decision_categories_category", "decision_categories", ["category", "direction"]
    )


def downgrade() -> None:
    op.drop_table("decision_categories")
    op.drop_table("decisions")

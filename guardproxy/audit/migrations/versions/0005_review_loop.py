"""the review loop: reviewers' labels, the access log, hourly rollups, named sessions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)
# The hour a decision's time falls in, as each dialect stores times: SQLite keeps the UTC wall
# clock as text ("YYYY-MM-DD HH:MM:SS.ffffff", SQLAlchemy's format), PostgreSQL a timestamptz.
HOUR_OF_TIME = {
    "sqlite": "substr(d.time, 1, 13) || ':00:00.000000'",
    "postgresql": "date_trunc('hour', d.time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
}
# A monitored decision's would_block and the shadow's action, as columns the list filters on
# (reading them out of every row's JSON took 0.67 s over 200k decisions).
FILTERED_FIELDS = {
    "sqlite": (
        "UPDATE decisions SET would_block = json_extract(record, '$.would_block'),"
        " shadow_action = json_extract(shadow, '$.action')"
    ),
    "postgresql": (
        "UPDATE decisions SET would_block = (record->>'would_block')::boolean,"
        " shadow_action = shadow->>'action'"
    ),
}
BACKFILL_HOURLY = """
INSERT INTO rollup_hourly (hour, tenant, action, requests, guard_ms, total_ms)
SELECT {hour}, coalesce(d.tenant, ''), d.action, count(*),
       sum(coalesce(d.input_ms, 0) + coalesce(d.output_ms, 0)), sum(coalesce(d.total_ms, 0))
FROM decisions d GROUP BY 1, 2, 3
"""
BACKFILL_CATEGORIES = """
INSERT INTO rollup_categories (hour, tenant, direction, category, blocks)
SELECT {hour}, coalesce(d.tenant, ''), c.direction, c.category, count(*)
FROM decisions d JOIN decision_categories c ON c.request_id = d.request_id
WHERE d.action = 'block' GROUP BY 1, 2, 3, 4
"""


def upgrade() -> None:
    op.create_table(
        "decision_labels",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "request_id",
            sa.String(64),
            sa.ForeignKey("decisions.request_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("time", WHEN, nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("categories", DOCUMENT),
    )
    op.create_index("ix_decision_labels_request", "decision_labels", ["request_id", "time"])
    op.create_index("ix_decision_labels_label_time", "decision_labels", ["label", "time"])
    op.create_table(
        "access_log",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("time", WHEN, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(64)),
        sa.Column("address", sa.String(64)),
        sa.Column("detail", DOCUMENT),
    )
    op.create_index("ix_access_log_time", "access_log", ["time"])
    op.create_index("ix_access_log_actor_time", "access_log", ["actor", "time"])
    op.create_table(
        "rollup_hourly",
        sa.Column("hour", WHEN, primary_key=True),
        sa.Column("tenant", sa.String(128), primary_key=True),  # "" when none
        sa.Column("action", sa.String(16), primary_key=True),
        sa.Column("requests", ID, nullable=False),
        sa.Column("guard_ms", sa.Float, nullable=False),  # input + output check time, summed
        sa.Column("total_ms", sa.Float, nullable=False),
    )
    op.create_table(
        "rollup_categories",
        sa.Column("hour", WHEN, primary_key=True),
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("direction", sa.String(8), primary_key=True),
        sa.Column("category", sa.String(128), primary_key=True),
        sa.Column("blocks", ID, nullable=False),
    )
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("would_block", sa.Boolean))
        batch.add_column(sa.Column("shadow_action", sa.String(16)))
    op.execute(FILTERED_FIELDS[op.get_bind().dialect.name])
    op.create_index("ix_decisions_shadow_action_time", "decisions", ["shadow_action", "time"])
    with op.batch_alter_table("admin_sessions") as batch:
        batch.add_column(sa.Column("user", sa.String(128)))
        batch.add_column(sa.Column("role", sa.String(16)))
        batch.add_column(sa.Column("tenants", DOCUMENT))
    _backfill_rollups()


def _backfill_rollups() -> None:
    """Count the decisions stored before this revision, as the writer counts new ones."""
    hour = HOUR_OF_TIME[op.get_bind().dialect.name]
    op.execute(BACKFILL_HOURLY.format(hour=hour))
    op.execute(BACKFILL_CATEGORIES.format(hour=hour))


def downgrade() -> None:
    op.drop_index("ix_decisions_shadow_action_time", "decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("shadow_action")
        batch.drop_column("would_block")
    with op.batch_alter_table("admin_sessions") as batch:
        batch.drop_column("tenants")
        batch.drop_column("role")
        batch.drop_column("user")
    op.drop_table("rollup_categories")
    op.drop_table("rollup_hourly")
    op.drop_index("ix_access_log_actor_time", "access_log")
    op.drop_index("ix_access_log_time", "access_log")
    op.drop_table("access_log")
    op.drop_index("ix_decision_labels_label_time", "decision_labels")
    op.drop_index("ix_decision_labels_request", "decision_labels")
    op.drop_table("decision_labels")

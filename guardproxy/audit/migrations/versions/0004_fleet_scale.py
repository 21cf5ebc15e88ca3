"""decisions at fleet scale on PostgreSQL: a bigint id, and jsonb documents

An int4 id runs out at 2^31 rows (about 25 days at 1,000 requests a second). SQLite's
INTEGER primary key is already 64-bit, and it has no jsonb: there this is a no-op.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
DOCUMENTS = ("record", "content", "shadow")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE decisions ALTER COLUMN id TYPE BIGINT")
    op.execute("ALTER SEQUENCE IF EXISTS decisions_id_seq AS BIGINT")
    for column in DOCUMENTS:
        op.execute(f"ALTER TABLE decisions ALTER COLUMN {column} TYPE JSONB USING {column}::jsonb")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in DOCUMENTS:
        op.execute(f"ALTER TABLE decisions ALTER COLUMN {column} TYPE JSON USING {column}::json")
    op.execute("ALTER SEQUENCE IF EXISTS decisions_id_seq AS INTEGER")
    op.execute("ALTER TABLE decisions ALTER COLUMN id TYPE INTEGER")

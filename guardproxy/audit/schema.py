"""The audit database: one row per decision, one per (direction, category) it named.

Indexed for the reviewer's filters: time, tenant, action, guard and API alone or with time,
and categories by name and direction. The whole audit record is kept as JSON beside the
columns, so the trail holds what the JSON-lines file holds.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
# 64-bit ids on PostgreSQL (SQLite's INTEGER primary key is its 64-bit rowid already), and
# jsonb documents there (revision 0004).
ID = BigInteger().with_variant(Integer(), "sqlite")
DOCUMENT = JSON().with_variant(JSONB(), "postgresql")

decisions = Table(
    "decisions",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("tenant", String(128)),
    Column("api", String(32), nullable=False),
    Column("guard", String(128)),
    Column("model", String(256)),
    Column("stream", Boolean, nullable=False, default=False),
    Column("action", String(16), nullable=False),
    Column("status", Integer),
    Column("input_status", String(16), nullable=False),
    Column("output_status", String(16), nullable=False),
    Column("input_ms", Float),
    Column("output_ms", Float),
    Column("upstream_ms", Float),
    Column("total_ms", Float),
    Column("record", DOCUMENT, nullable=False),
    Column("content", DOCUMENT),  # only where the tenant opted in (audit_content)
    Column("shadow", DOCUMENT),  # the tenant's shadow policy's decision, written after the live one
    # Copied out of the documents for the list's filters (revision 0005): a monitored
    # decision's would_block, and the shadow policy's action.
    Column("would_block", Boolean),
    Column("shadow_action", String(16)),
    Index("ix_decisions_time", "time"),
    Index("ix_decisions_tenant_time", "tenant", "time"),
    Index("ix_decisions_action_time", "action", "time"),
    Index("ix_decisions_guard_time", "guard", "time"),
    Index("ix_decisions_api_time", "api", "time"),
    Index("ix_decisions_shadow_action_time", "shadow_action", "time"),
)

decision_categories = Table(
    "decision_categories",
    metadata,
    Column(
        "request_id",
        String(64),
        ForeignKey("decisions.request_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("direction", String(8), primary_key=True),
    Column("category", String(128), primary_key=True),
    Index("ix_decision_categories_category", "category", "direction"),
)

# The reviewer page's sessions (admin/sessions.py): the SHA-256 of each browser's random token,
# the key it was opened with (by its SHA-256; for OIDC, of the provider), the expiry the server
# chose, and who signed in.
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("key_sha256", String(64), nullable=False),
    Column("expires", Float, nullable=False),  # Unix time
    Column("user", String(128)),  # the named reviewer (admin.users), revision 0005
    Column("role", String(16)),  # their role and tenants as they signed in, revision 0005
    Column("tenants", DOCUMENT),
    Index("ix_admin_sessions_expires", "expires"),
)

# A reviewer's word on a decision (revision 0005): who, when, which label, a note, and the
# categories they believe apply. Several per decision; the newest is the decision's label.
LABELS = ("correct", "false_positive", "false_negative", "escalate")
decision_labels = Table(
    "decision_labels",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column(
        "request_id",
        String(64),
        ForeignKey("decisions.request_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("reviewer", String(128), nullable=False),
    Column("label", String(32), nullable=False),
    Column("note", Text),
    Column("categories", DOCUMENT),
    Index("ix_decision_labels_request", "request_id", "time"),
    Index("ix_decision_labels_label_time", "label", "time"),
)

# Who looked at what (revision 0005): sign-ins, failed sign-ins, content views, labels and
# exports, with the decision they concern.
ACCESS_EVENTS = ("sign_in", "sign_in_failed", "content_view", "label", "export")
access_log = Table(
    "access_log",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("event", String(32), nullable=False),
    Column("request_id", String(64)),
    Column("address", String(64)),
    Column("detail", DOCUMENT),
    Index("ix_access_log_time", "time"),
    Index("ix_access_log_actor_time", "actor", "time"),
)

# Hourly counts kept by the writer (revision 0005), so a page view reads a few hundred rows
# rather than tallying a day of decisions. Tenant, direction and category are "" when none.
rollup_hourly = Table(
    "rollup_hourly",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("tenant", String(128), primary_key=True),
    Column("action", String(16), primary_key=True),
    Column("requests", ID, nullable=False),
    Column("guard_ms", Float, nullable=False),  # input + output check time, summed
    Column("total_ms", Float, nullable=False),
)
rollup_categories = Table(
    "rollup_categories",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("tenant", String(128), primary_key=True),
    Column("direction", String(8), primary_key=True),
    Column("category", String(128), primary_key=True),
    Column("blocks", ID, nullable=False),
)

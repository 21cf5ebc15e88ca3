"""The audit trail: every decision, written to JSON lines and, optionally, a database that the
reviewer page queries.

exchange ──► audit record ──► sinks.py   JSON lines (file or stdout), always
                          └─► store.py   SQLAlchemy: SQLite (WAL) or PostgreSQL, batched
                                 ▲ schema.py (tables, indexes) · migrations/ (Alembic)
                                 └ query.py  the reviewer's filters, paging and chart
"""

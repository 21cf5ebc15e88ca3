"""Alembic's environment for the audit database.

The proxy runs migrations itself at start (audit/store.py hands over its connection in
`config.attributes["connection"]`); `alembic` offline mode renders the SQL for a DBA instead.
"""

from __future__ import annotations

from alembic import context

from guardproxy.audit.schema import metadata

config = context.config

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(
        connection=config.attributes["connection"],
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()

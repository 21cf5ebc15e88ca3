"""The ASGI edge: the only package that wires `api/`, `pipeline/` and `admin/` together, and the
one nothing else imports."""

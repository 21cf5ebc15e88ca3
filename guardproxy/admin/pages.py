"""Rendering the reviewer's pages: Jinja2 templates, sent with the admin headers and a content
security policy that allows only the page's own nonce'd style and script."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

# Every admin response: no framing, no sniffing, no referrer; pages add a nonce'd CSP.
HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
}
PAGE_POLICY = (
    "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class Pages:
    """Server-rendered pages with the admin headers and a nonce'd content security policy."""

    def __init__(self, templates: Jinja2Templates) -> None:
        self.templates = templates

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        nonce = secrets.token_urlsafe(16)
        context = {**context, "csp_nonce": nonce}
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        response.headers.update(
            {**HEADERS, "content-security-policy": PAGE_POLICY.format(nonce=nonce)}
        )
        return response

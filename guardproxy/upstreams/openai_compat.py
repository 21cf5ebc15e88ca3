"""Any OpenAI-compatible LLM server (vLLM, NIM, OpenAI, Azure-style gateways) over httpx."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx

from guardproxy.config import ANTHROPIC_VERSION, UNFORWARDABLE_HEADERS, UpstreamSettings
from guardproxy.core.conversation import Conversation
from guardproxy.errors import UpstreamError, UpstreamTimeout
from guardproxy.health import probe_models
from guardproxy.upstreams.base import RELAYED_RESPONSE_HEADERS, UpstreamReply

logger = logging.getLogger(__name__)

UNREACHABLE = "The upstream LLM could not be reached."
BROKE_OFF = "The upstream LLM's answer broke off."


class OpenAIUpstream:
    def __init__(self, client: httpx.AsyncClient, settings: UpstreamSettings) -> None:
        assert settings.url is not None
        self.client = client
        self.settings = settings
        self.base_url = settings.url.rstrip("/")
        self.timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)

    def url(self, request: Conversation) -> str:
        return f"{self.base_url}{request.codec.upstream_path}"

    async def send(
        self, request: Conversation, body: bytes, headers: dict[str, str]
    ) -> UpstreamReply:
        auth = self._auth(request.codec.api)
        outgoing = {
            **self._defaults(request),
            **_forwardable(headers),
            **auth,  # last: nothing the client sent replaces the configured key
            "content-type": "application/json",
        }
        if request.stream:
            outgoing["accept"] = "text/event-stream"
        http_request = self.client.build_request(
            "POST",
            self.url(request),
            content=body,
            headers=outgoing,
            timeout=self.timeout,
        )
        response = await self._send(http_request)
        if request.stream and response.is_success:
            return self._streamed(response)
        return await self._whole(response)

    async def list_models(self) -> UpstreamReply:
        http_request = self.client.build_request(
            "GET", f"{self.base_url}/models", headers=self._auth(), timeout=self.timeout
        )
        return await self._whole(await self._send(http_request))

    async def probe(self) -> str | None:
        # Some providers refuse GET /models (401, 404) yet serve chat: only 5xx is down.
        return await probe_models(self.client, self.base_url, self.settings.api_key, 500)

    def _auth(self, api: str = "chat.completions") -> dict[str, str]:
        key = self.settings.api_key
        if not key:
            return {}
        if api == "messages" and self.settings.messages_auth == "x-api-key":
            return {"x-api-key": key}
        return {"authorization": f"Bearer {key}"}

    def _defaults(self, request: Conversation) -> dict[str, str]:
        return {"anthropic-version": ANTHROPIC_VERSION} if request.codec.api == "messages" else {}

    async def _send(self, http_request: httpx.Request) -> httpx.Response:
        try:
            return await self.client.send(http_request, stream=True)
        except httpx.TimeoutException as exc:
            timeout = UpstreamTimeout("The upstream LLM did not answer in time.", repr(exc))
            raise _logged(timeout) from exc
        except httpx.HTTPError as exc:
            raise _logged(UpstreamError(UNREACHABLE, repr(exc))) from exc

    async def _whole(self, response: httpx.Response) -> UpstreamReply:
        try:
            body = await response.aread()
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("The upstream LLM stopped answering.") from exc
        except httpx.HTTPError as exc:
            raise _logged(UpstreamError(BROKE_OFF, repr(exc))) from exc
        finally:
            await response.aclose()
        return UpstreamReply(
            response.status_code, _relayed(response), body, content_type=_content_type(response)
        )

    def _streamed(self, response: httpx.Response) -> UpstreamReply:
        return UpstreamReply(
            response.status_code,
            _relayed(response),
            stream=_chunks(response),
            aclose=response.aclose,
            content_type=_content_type(response),
        )


async def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout("The upstream LLM stopped streaming.") from exc
    except httpx.HTTPError as exc:
        raise _logged(UpstreamError("The upstream LLM's stream broke off.", repr(exc))) from exc


def _forwardable(headers: dict[str, str]) -> dict[str, str]:
    """The client's headers, less any that carry credentials, pick the host or frame the
    message: the config refuses those too, this keeps a hand-built settings object honest."""
    return {k: v for k, v in headers.items() if k.lower() not in UNFORWARDABLE_HEADERS}


def _logged(exc: UpstreamError) -> UpstreamError:
    """The client reads `str(exc)`; the httpx error, which names the host, goes to the log."""
    logger.warning("%s %s", exc, exc.detail)
    return exc


def _relayed(response: httpx.Response) -> dict[str, str]:
    return {k: response.headers[k] for k in RELAYED_RESPONSE_HEADERS if k in response.headers}


def _content_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("content-type", "application/json")
    return content_type

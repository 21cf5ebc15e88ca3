"""guardproxy's exception tree. HTTP status codes are assigned in `pipeline/replies.py` only.

GuardproxyError
├── ConfigError                 config or policy file is invalid (file:line: message)
├── RequestError                the client's request is malformed               -> 400
│   └── PayloadTooLarge         body over the configured limit                  -> 413
├── AuthenticationError         missing or unknown proxy key                    -> 401
├── GuardError                  the guard gave no usable verdict                -> 503
│   ├── GuardOverloaded         shed: no call slot within queue_timeout_s (Retry-After)
│   ├── GuardUnavailable        connect error, timeout, 5xx, bad status, every replica ejected
│   └── UnparseableVerdict      answer does not match the protocol's grammar
└── UpstreamError               the upstream LLM failed                         -> 502
    ├── UpstreamTimeout         the upstream LLM did not answer in time         -> 504
    └── UpstreamUnavailable     not asked: its breaker is open                  -> 503
"""

from __future__ import annotations


class GuardproxyError(Exception):
    """Base of every error guardproxy raises on purpose."""


class ConfigError(GuardproxyError):
    """An invalid config or policy file; `str()` is `file:line: message`."""

    def __init__(self, message: str, file: str = "", line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        super().__init__(self.location + message)

    @property
    def location(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}: " if self.line else f"{self.file}: "


class RequestError(GuardproxyError):
    """The client's request cannot be served as sent."""

    def __init__(self, message: str, param: str | None = None) -> None:
        self.message = message
        self.param = param
        super().__init__(message)


class PayloadTooLarge(RequestError):
    pass


class AuthenticationError(GuardproxyError):
    pass


class GuardError(GuardproxyError):
    pass


class GuardUnavailable(GuardError):
    pass


class GuardOverloaded(GuardError):
    """Shed at admission: the guard has no free call slot. Never allowed through, whatever
    `on_guard_error` says, so that overload cannot turn into unchecked traffic."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class UnparseableVerdict(GuardError):
    """The guard answered, but not in its protocol's grammar: handled like an outage."""

    def __init__(self, message: str, raw: str = "") -> None:
        self.raw = raw
        super().__init__(message)


class UpstreamError(GuardproxyError):
    """`str()` is what the client reads, so it never names the upstream; `detail` (the
    foreign error, which may name its host and port) is for the logs only."""

    def __init__(self, message: str, detail: str = "") -> None:
        self.message = message
        self.detail = detail
        super().__init__(message)


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamUnavailable(UpstreamError):
    pass


class ClientDisconnected(GuardproxyError):
    """Nobody is left to answer; the status (499, nginx's convention) is for the audit log."""

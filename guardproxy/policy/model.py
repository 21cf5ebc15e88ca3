"""Tenant policies (one YAML file per tenant) and regional rule packs, as typed objects.

Loading, inheritance and cross-checks are in `loader.py`; what a policy means for one
request (category actions, the text the guard sees) is computed in `profile.py`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from guardproxy.config import Frozen, checked_keys
from guardproxy.core.verdict import PolicyMode
from guardproxy.errors import AuthenticationError
from guardproxy.media.settings import ImagesSettings, VideoSettings
from guardproxy.policy.refusals import LANGUAGE_TAG, Refusals, checked_languages

DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."
KEY_ID_HEX = 12  # 48 bits: tells apart far more keys than a tenant has, reveals none
HASHED_KEY = re.compile(r"sha256:([0-9a-f]{64})")
REGION_CODE = r"^[A-Z]{2}$"

CategoryAction = Literal["block", "redact", "flag", "allow"]
# The kinds of turn a guard of a chain may be given: the client's own, tool and function
# results, operator text (system and developer messages, retrieved documents) and answers.
TurnKind = Literal["user", "tool", "system", "assistant"]
GUARD_KEYS = ("guard", "guards")  # a tenant names one of them; a child's replaces its parent's


def _on_off(value: Any) -> Any:
    """`on`/`off` as YAML 1.1 means them, also when quoted."""
    if isinstance(value, str) and value.lower() in ("on", "off"):
        return value.lower() == "on"
    return value


OnOff = Annotated[bool, BeforeValidator(_on_off)]


class CustomCategory(Frozen):
    name: str = Field(min_length=1)
    description: str = ""
    action: CategoryAction = "block"


def _named(entry: Any) -> Any:
    """A chain entry given as a bare guard name."""
    return {"guard": entry} if isinstance(entry, str) else entry


class ChainedGuard(Frozen):
    """One guard of a tenant's chain, and what it judges."""

    guard: str = Field(min_length=1)
    # None: every turn a single `guard:` judges (operator text with `input.judge_system`).
    turns: tuple[TurnKind, ...] | None = Field(default=None, min_length=1)
    # Whether it judges answers; None: as its protocol says (`judges_answers`), resolved on load.
    output: bool | None = None


class InputPolicy(Frozen):
    enabled: bool = True
    # sequential: the upstream is called after a safe verdict. parallel: at once, and
    # nothing it sends reaches the client before the verdict (the provider sees the prompt).
    mode: Literal["sequential", "parallel"] = "sequential"
    default: CategoryAction = "block"  # for unsafe verdicts naming no listed category
    categories: dict[str, CategoryAction] = Field(default_factory=dict)
    reasoning: OnOff | None = None  # None: the tenant's `reasoning`
    judge_system: bool = False  # also judge system and developer messages
    # A content part no guard can judge (`file`, `input_audio`, unknown types): refuse (400)
    # or allow (forwarded, and recorded in the audit record).
    unjudged_parts: Literal["refuse", "allow"] = "refuse"
    # Tools the provider runs itself (web search, file search, code execution, MCP servers),
    # switched on by the client: their outputs are judged like any answer text (`judge`), or
    # such a request is refused with a 400 (`refuse`).
    hosted_tools: Literal["judge", "refuse"] = "judge"
    # The most characters one guard call judges (fit it to the guard's context: 16000 is
    # ~4000 tokens of English). A longer text is judged in overlapping segments; when a
    # request takes more than `max_guard_calls` calls, its earlier turns are grouped into
    # windows of this size, and a request that needs more calls even then is refused (400).
    window_chars: int = Field(default=16000, ge=1024)
    max_guard_calls: int = Field(default=64, ge=1)


class OutputPolicy(Frozen):
    enabled: bool = True
    default: CategoryAction = "block"
    categories: dict[str, CategoryAction] = Field(default_factory=dict)
    reasoning: OnOff | None = None
    # buffer: collect the whole streamed answer, check, then send. chunked: release text
    # window by window, each after its check (see moderation.py).
    stream: Literal["buffer", "chunked"] = "chunked"
    # Characters. 1: the first word is released as soon as it is checked, so time to first
    # token grows by one guard call and no more. Each later window is at least `growth` times
    # what was released before it, so guard calls grow with the logarithm of the answer's
    # length, and the text held back stays a fixed share of it (at 4, a fifth is on screen
    # while the rest is judged; people read far slower than models write).
    first_window: int = Field(default=1, ge=1)
    growth: float = Field(default=4.0, ge=0.5, le=16)
    # The largest window. None: what one guard call judges beside the overlap and a quarter
    # window of prompt (11,872 characters at the default `window_chars`). It was 512 when
    # windows only doubled; set it to cap how much text waits for one check.
    window: int | None = Field(default=None, ge=1)
    # At most this much of the text before a window is judged again with it, and at most a
    # quarter of the window: a small window brings a little context, a large one all of this.
    overlap: int = Field(default=128, ge=0)
    final_check: bool = True  # check the whole answer before [DONE]
    stream_first: bool = False  # true: release before checking (text can leak)
    # Guard checks one stream may have in flight. While they run, arriving text waits and
    # joins the next window (up to the largest): a fast guard gets small windows, a slow or
    # busy one fewer, larger ones, and N streams never send more than N x this many checks.
    checks_in_flight: int = Field(default=1, ge=1, le=8)
    # The most characters of answer and prompt one guard call judges (not the stream window):
    # a longer answer is judged in overlapping segments, each with the end of the prompt.
    window_chars: int = Field(default=16000, ge=1024)

    @model_validator(mode="after")
    def _windows_fit(self) -> OutputPolicy:
        if self.window is not None and self.first_window > self.window:
            raise ValueError("first_window must not exceed window")
        return self


class RedactionPattern(Frozen):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str) -> str:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from exc
        return regex


class WordList(Frozen):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    words: tuple[str, ...] = Field(min_length=1)


class RedactionPolicy(Frozen):
    detectors: tuple[str, ...] = ()
    patterns: tuple[RedactionPattern, ...] = ()
    words: tuple[WordList, ...] = ()
    placeholder: str = "[REDACTED:{type}]"

    @property
    def enabled(self) -> bool:
        return bool(self.detectors or self.patterns or self.words)


class McpPolicy(Frozen):
    """The MCP servers the tenant may reach through `/mcp/{name}`, and what becomes of a
    server's request for the client's model (`sampling/createMessage`): judged as input, or
    refused on the client's behalf."""

    servers: tuple[str, ...] = ()
    sampling: Literal["judge", "refuse"] = "judge"


class TenantPolicy(Frozen):
    tenant: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    keys: tuple[str, ...] = Field(min_length=1)
    # `guard: NAME` is read as a chain of one (`_one_guard_key`); `guards:` runs several in
    # parallel on each check, their verdicts combined (pipeline/chain.py).
    guards: tuple[Annotated[ChainedGuard, BeforeValidator(_named)], ...] = Field(min_length=1)
    upstream: str
    on_block: Literal["refusal", "error"] = "refusal"
    # One text, or one per language (`{en: ..., de: ...}`); see refusals.py for the choice.
    refusal_message: str | dict[str, str] = DEFAULT_REFUSAL
    on_guard_error: Literal["block", "allow"] = "block"
    regions: tuple[str, ...] = ()
    allowed_regions: tuple[str, ...] = ()
    policy: str = ""
    # How a customised policy reaches a Nemotron 3.5 guard (see verdict.PolicyMode), and what
    # an unsafe verdict of the natural-language policy (Mode A) gets when it names no category.
    policy_mode: PolicyMode = "taxonomy"
    policy_action: CategoryAction = "block"
    custom_categories: tuple[CustomCategory, ...] = ()
    # Built-in names the guard may return that the proxy does not know (S24 of Nemotron 3.5).
    extra_categories: tuple[str, ...] = ()
    needs_caution: Literal["block", "allow"] = "block"
    controversial: Literal["unsafe", "safe"] = "unsafe"  # Qwen3Guard: strict or loose
    input: InputPolicy = InputPolicy()
    output: OutputPolicy = OutputPolicy()
    reasoning: OnOff = False
    expose_reasoning: bool = False
    # What of the exchange the audit trail keeps: nothing (the default), the judged text with
    # every PII detector applied, or the text as it was.
    audit_content: Literal["none", "redacted", "full"] = "none"
    # monitor: every check runs and is recorded with the action it would have had, but
    # nothing is blocked, redacted or failed.
    mode: Literal["enforce", "monitor"] = "enforce"
    # A policy judged beside this one after each response, never enforced: `_NAME.yaml` in
    # the policies folder (or NAME.yaml if NAME starts with "_"), merged over this tenant.
    shadow: str | None = None
    redaction: RedactionPolicy = RedactionPolicy()
    mcp: McpPolicy = McpPolicy()
    images: ImagesSettings = ImagesSettings()
    video: VideoSettings = VideoSettings()

    @model_validator(mode="before")
    @classmethod
    def _one_guard_key(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "guard" not in data:
            return data
        if "guards" in data:
            raise ValueError("give either guard or guards, not both")
        return {**{k: v for k, v in data.items() if k != "guard"}, "guards": [data["guard"]]}

    @property
    def guard(self) -> str:
        """The chain's names as one label (the audit's `guard` column, `policy show`)."""
        return ",".join(entry.guard for entry in self.guards)

    @property
    def guard_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(entry.guard for entry in self.guards))

    @field_validator("keys")
    @classmethod
    def _keys_not_empty(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        return checked_keys(keys, "a key")

    @field_validator("refusal_message")
    @classmethod
    def _languages(cls, message: str | dict[str, str]) -> str | dict[str, str]:
        return message if isinstance(message, str) else checked_languages(message)

    def key_digests(self) -> list[bytes]:
        return [key_digest(key) for key in self.keys]


class RegionCategories(Frozen):
    input: dict[str, CategoryAction] = Field(default_factory=dict)
    output: dict[str, CategoryAction] = Field(default_factory=dict)


class RegionPack(Frozen):
    """A market's rules (`policies/regions/<CODE>.yaml`), composed into tenants that name it."""

    region: str = Field(pattern=r"^([A-Z]{2}|EU)$")
    name: str
    extends: tuple[str, ...] = ()
    rules: str = ""
    categories: RegionCategories = RegionCategories()
    custom_categories: tuple[CustomCategory, ...] = ()
    # The market's language: the refusal's, for a request whose Accept-Language has none.
    language: str | None = Field(default=None, pattern=LANGUAGE_TAG)


def key_digest(key: str) -> bytes:
    match = HASHED_KEY.fullmatch(key)
    return bytes.fromhex(match.group(1)) if match else hashlib.sha256(key.encode()).digest()


def key_id(digest: bytes) -> str:
    """Which of a tenant's keys was used, never the key: the first 12 hex digits of the SHA-256
    of its SHA-256 digest. No secret goes in, so it is the same after a restart and on every
    replica, and an operator can work it out from a `sha256:` key in the config."""
    return hashlib.sha256(digest).hexdigest()[:KEY_ID_HEX]


@dataclass(frozen=True)
class PolicySet:
    """Every tenant and region pack, tenants indexed by the SHA-256 of their proxy keys.

    Immutable: a reload builds a new set and swaps it in whole.
    """

    tenants: dict[str, TenantPolicy]
    by_key: dict[bytes, TenantPolicy]
    regions: dict[str, RegionPack] = field(default_factory=dict)
    shadows: dict[str, TenantPolicy] = field(default_factory=dict)  # tenant -> its shadow
    refusals: dict[str, Refusals] = field(default_factory=dict)  # tenant -> its refusal texts

    def authenticate(self, authorization: str | None) -> TenantPolicy:
        return self.identify(authorization)[0]

    def identify(self, authorization: str | None) -> tuple[TenantPolicy, str]:
        """The key's tenant, and the key's id for the audit record (`key_id`)."""
        token = _bearer_token(authorization)
        # Keys are looked up by their SHA-256, so lookup timing says nothing about the key.
        digest = hashlib.sha256(token.encode()).digest()
        tenant = self.by_key.get(digest)
        if tenant is None:
            raise AuthenticationError("Incorrect API key provided.")
        return tenant, key_id(digest)


def _bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
    return token.strip()

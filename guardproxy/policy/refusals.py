"""The refusal in the user's language: the tenant's `refusal_message` by language, laid over
the shipped translations of the default refusal, chosen by `Accept-Language`, then the region
pack's language, then the default.

    policies/regions/_refusals.yaml   the default refusal in each shipped language
    policies/regions/<CODE>.yaml      `language:` the pack's language, for requests naming none
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import Field, field_validator

from guardproxy.config import Frozen

DEFAULT_LANGUAGE = "en"
REFUSALS_FILE = "_refusals"  # its stem in the regions folder
# A language tag as RFC 5646 writes it, lower-cased: `de`, `pt-br`, `zh-hant-tw`.
LANGUAGE_TAG = r"^[a-z]{2,3}(-[a-z0-9]{1,8})*$"
QUALITY = re.compile(r"^q=(0(\.\d{0,3})?|1(\.0{0,3})?)$")


class ShippedRefusals(Frozen):
    """`_refusals.yaml`: the default refusal, translated (`en` is the default itself)."""

    refusals: dict[str, str] = Field(default_factory=dict)

    @field_validator("refusals")
    @classmethod
    def _languages(cls, texts: dict[str, str]) -> dict[str, str]:
        return checked_languages(texts)


def checked_languages(texts: dict[str, str]) -> dict[str, str]:
    """Texts by language tag, tags lower-cased (they are case-insensitive, RFC 5646 §2.1.1)."""
    if not texts:
        raise ValueError("name at least one language")
    checked = {tag.lower(): text for tag, text in texts.items()}
    for tag, text in checked.items():
        if not re.fullmatch(LANGUAGE_TAG, tag):
            raise ValueError(f"{tag!r} is not a language tag (en, de, pt-br)")
        if not text.strip():
            raise ValueError(f"the {tag!r} text is empty")
    return checked


def accepted_languages(header: str | None) -> list[str]:
    """The languages of an `Accept-Language` header, most wanted first (RFC 9110 §12.5.4):
    by q-value, ties in the header's order; `q=0` (not acceptable), `*` and malformed entries
    left out, because the default answers anything not named."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((header or "").split(",")):
        tag, _, params = item.partition(";")
        tag, quality = tag.strip().lower(), _quality(params)
        if quality and tag != "*" and re.fullmatch(LANGUAGE_TAG, tag):
            ranked.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


def _quality(params: str) -> float:
    """The `q` weight (1 when absent); 0 for one that is not a valid qvalue."""
    for param in params.split(";"):
        param = param.strip().lower().replace(" ", "")
        if param.startswith("q="):
            return float(param[2:]) if QUALITY.match(param) else 0.0
    return 1.0


@dataclass(frozen=True)
class Refusals:
    """One tenant's refusal texts by language tag, and the language of each region pack."""

    texts: Mapping[str, str]
    default: str  # the language told when nothing else matches
    regions: Mapping[str, str] = field(default_factory=dict)  # region code -> language

    def choose(self, accept_language: str | None, regions: Sequence[str]) -> tuple[str, str]:
        """(language, text): the first accepted language the tenant has (the exact tag, else
        its primary subtag: `de-AT` gets `de`), else the language of the first of `regions`
        (most specific first) whose pack names one the tenant has, else the default."""
        for tag in accepted_languages(accept_language):
            found = self._known(tag)
            if found is not None:
                return found, self.texts[found]
        for code in regions:
            language = self.regions.get(code)
            if language is not None and (found := self._known(language)) is not None:
                return found, self.texts[found]
        return self.default, self.texts[self.default]

    def _known(self, tag: str) -> str | None:
        if tag in self.texts:
            return tag
        primary = tag.split("-")[0]
        return primary if primary in self.texts else None


def tenant_refusals(
    message: str | Mapping[str, str],
    shipped: Mapping[str, str],
    regions: Mapping[str, str],
    default_text: str,
) -> Refusals:
    """A tenant's refusals, `en` the default (the single string is `en`; a map without `en`
    keeps `default_text` there). The shipped texts translate `default_text`, so they serve a
    tenant whose `en` is that text, each language the tenant names replacing the shipped one;
    a tenant with an `en` of its own gets only its own texts, never a translation of
    something it did not write."""
    own = {DEFAULT_LANGUAGE: message} if isinstance(message, str) else dict(message)
    if own.setdefault(DEFAULT_LANGUAGE, default_text) == default_text:
        return Refusals({**shipped, **own}, DEFAULT_LANGUAGE, regions)
    return Refusals(own, DEFAULT_LANGUAGE, regions)

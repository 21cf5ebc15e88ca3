"""The refusal's language: Accept-Language parsing, the choice, and what a tenant inherits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from guardproxy.policy.model import DEFAULT_REFUSAL, ChainedGuard, TenantPolicy
from guardproxy.policy.refusals import ShippedRefusals, accepted_languages, tenant_refusals

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {"en": DEFAULT_REFUSAL, "de": "Nein.", "ja": "いいえ。", "fr": "Non."}
PACKS = {"DE": "de", "JP": "ja", "BR": "pt"}
NEMOTRON_LANGUAGES = {"en", "ar", "de", "es", "fr", "hi", "ja", "th", "nl", "it", "ko", "zh"}


@pytest.mark.parametrize(
    ("header", "languages"),
    [
        (None, []),
        ("", []),
        ("de", ["de"]),
        ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", ["fr-ch", "fr", "en", "de"]),
        ("en;q=0.5, ja", ["ja", "en"]),  # by weight, not by position
        ("de;q=0.8, fr;q=0.8, ja;q=0.8", ["de", "fr", "ja"]),  # ties keep the header's order
        ("de;q=0, en", ["en"]),  # q=0: not acceptable
        ("de; q=0.9", ["de"]),  # whitespace around the parameter
        ("EN-gb", ["en-gb"]),  # case-insensitive
        ("de;q=2, en;q=0.1234, ja;q=abc, ko", ["ko"]),  # invalid qvalues are not acceptable
        ("12, x!, -de, ko", ["ko"]),  # not language tags
        ("zh-Hant-TW;q=0.9", ["zh-hant-tw"]),
    ],
)
def test_accept_language_is_ranked_by_its_q_values(
    header: str | None, languages: list[str]
) -> None:
    assert accepted_languages(header) == languages


def test_the_first_accepted_language_the_tenant_has_is_chosen() -> None:
    refusals = tenant_refusals(DEFAULT_REFUSAL, SHIPPED, PACKS, DEFAULT_REFUSAL)
    assert refusals.choose("ko, ja;q=0.9, de;q=0.8", ()) == ("ja", "いいえ。")
    assert refusals.choose("de-AT", ()) == ("de", "Nein.")  # the primary subtag


def test_without_an_accepted_language_the_region_pack_decides_then_the_default() -> None:
    refusals = tenant_refusals(DEFAULT_REFUSAL, SHIPPED, PACKS, DEFAULT_REFUSAL)
    assert refusals.choose("ko", ("JP", "DE")) == ("ja", "いいえ。")
    assert refusals.choose(None, ("BR", "DE")) == ("de", "Nein.")  # no pt text: the next pack
    assert refusals.choose(None, ("US",)) == ("en", DEFAULT_REFUSAL)
    assert refusals.choose("*", ()) == ("en", DEFAULT_REFUSAL)


def test_a_tenant_overrides_one_shipped_language_and_keeps_the_rest() -> None:
    refusals = tenant_refusals({"de": "Das geht nicht."}, SHIPPED, PACKS, DEFAULT_REFUSAL)
    assert refusals.choose("de", ()) == ("de", "Das geht nicht.")
    assert refusals.choose("fr", ()) == ("fr", "Non.")
    assert refusals.choose(None, ()) == ("en", DEFAULT_REFUSAL)


def test_a_refusal_of_the_tenants_own_is_never_replaced_by_a_translation() -> None:
    own = tenant_refusals("Ask support@example.com.", SHIPPED, PACKS, DEFAULT_REFUSAL)
    assert own.choose("de", ("DE",)) == ("en", "Ask support@example.com.")
    mine = {"en": "No, sorry.", "de": "Leider nein."}
    chosen = tenant_refusals(mine, SHIPPED, PACKS, DEFAULT_REFUSAL)
    assert chosen.choose("ja, de;q=0.5", ()) == ("de", "Leider nein.")
    assert chosen.choose("ja", ()) == ("en", "No, sorry.")


def test_a_map_without_english_keeps_the_default_refusal_as_its_default() -> None:
    refusals = tenant_refusals({"de": "Nein.", "fr": "Non."}, {}, {}, DEFAULT_REFUSAL)
    assert refusals.choose("ja", ()) == ("en", DEFAULT_REFUSAL)
    assert refusals.choose("fr", ()) == ("fr", "Non.")


def tenant(message: object) -> TenantPolicy:
    keys = ("sk-1",)
    return TenantPolicy(
        tenant="t",
        keys=keys,
        guards=(ChainedGuard(guard="g"),),
        upstream="u",
        refusal_message=message,
    )


def test_refusal_languages_are_language_tags_lower_cased() -> None:
    assert tenant({"DE-at": "Nein."}).refusal_message == {"de-at": "Nein."}
    for bad in ({"german": "Nein."}, {"de": " "}, {}):
        with pytest.raises(ValidationError):
            tenant(bad)


def test_the_shipped_file_translates_the_default_into_the_guards_languages() -> None:
    data = yaml.safe_load((REPO / "policies" / "regions" / "_refusals.yaml").read_text())
    shipped = ShippedRefusals.model_validate(data).refusals
    assert set(shipped) >= NEMOTRON_LANGUAGES
    assert shipped["en"] == DEFAULT_REFUSAL
    assert len(set(shipped.values())) == len(shipped)  # each a translation of its own


def test_each_national_region_pack_names_a_language_with_a_shipped_refusal() -> None:
    regions = REPO / "policies" / "regions"
    data = yaml.safe_load((regions / "_refusals.yaml").read_text())
    shipped = ShippedRefusals.model_validate(data).refusals
    for path in regions.glob("[A-Z][A-Z].yaml"):
        pack = yaml.safe_load(path.read_text())
        if pack["region"] != "EU":  # a union of 24 languages names none
            assert pack["language"] in shipped, path.name

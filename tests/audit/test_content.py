"""Opted-in content: `redacted` masks every PII and secret detector; `full` keeps the text as
forwarded but never a live credential."""

from __future__ import annotations

from guardproxy.pipeline.content import SECRET_DETECTORS, CaptureMode, ContentCapture
from guardproxy.pipeline.masking import Masker
from guardproxy.policy.model import RedactionPolicy
from guardproxy.redaction import CATEGORY_DETECTORS, DETECTORS

OPENAI_KEY = "sk-proj-T3BlbkFJq8x2Zr7vLm4Nw9Yc1Hd6Ks0Pa5Ub"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
PROMPT = f"Email jane.doe@example.com, use {OPENAI_KEY} then {AWS_KEY} to upload the invoice"
MASKED_KEYS = "use [REDACTED:SECRET] then [REDACTED:SECRET] to upload the invoice"


def capture(mode: CaptureMode, policy: RedactionPolicy | None = None) -> ContentCapture:
    masker = Masker.for_policy(policy or RedactionPolicy())
    return ContentCapture(mode, masker, PROMPT, response=f"Done with {OPENAI_KEY}.")


def test_full_content_masks_live_keys_and_keeps_the_rest_verbatim() -> None:
    content = capture("full").view()
    assert content["prompt"] == f"Email jane.doe@example.com, {MASKED_KEYS}"
    assert content["response"] == "Done with [REDACTED:SECRET]."


def test_full_content_keeps_the_tenants_own_masking_as_forwarded() -> None:
    content = capture("full", RedactionPolicy(detectors=("email",))).view()
    assert content["prompt"] == f"Email [REDACTED:EMAIL], {MASKED_KEYS}"


def test_redacted_content_masks_pii_and_secrets() -> None:
    content = capture("redacted").view()
    assert content["prompt"] == f"Email [REDACTED:EMAIL], {MASKED_KEYS}"
    assert content["response"] == "Done with [REDACTED:SECRET]."


def test_the_secret_detectors_are_built_in_and_none_of_them_is_pii() -> None:
    assert SECRET_DETECTORS.issubset(DETECTORS)
    assert not SECRET_DETECTORS & set(CATEGORY_DETECTORS["PII/Privacy"])
    assert set(DETECTORS) - SECRET_DETECTORS == set(CATEGORY_DETECTORS["PII/Privacy"])

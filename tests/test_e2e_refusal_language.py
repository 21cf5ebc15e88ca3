"""The refusal in the user's language, through each API's official client: Accept-Language
first, then the tenant's region pack, then the default; the audit record names the choice."""

from __future__ import annotations

import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import REPO, Proxy, ProxyFactory
from tests.test_e2e_cutoff_conventions import UNSAFE, story

SHIPPED = yaml.safe_load((REPO / "policies" / "regions" / "_refusals.yaml").read_text())["refusals"]
UNSAFE_PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "how do I build a bomb"}
]


def test_chat_refuses_in_the_accepted_language(proxy: Proxy) -> None:
    headers = {"Accept-Language": "ko;q=0.5, de-DE, de;q=0.9"}
    answer = proxy.client().chat.completions.create(
        model="m", messages=UNSAFE_PROMPT, extra_headers=headers
    )
    assert answer.choices[0].message.content == SHIPPED["de"]
    assert proxy.record(1)["refusal_language"] == "de"


def test_responses_refuses_in_the_accepted_language(proxy: Proxy) -> None:
    headers = {"Accept-Language": "ja"}
    answer = proxy.client().responses.create(
        model="m", input="how do I build a bomb", extra_headers=headers
    )
    assert answer.output_text == SHIPPED["ja"]
    assert proxy.record(1)["refusal_language"] == "ja"


def test_messages_refuses_in_the_accepted_language(proxy: Proxy) -> None:
    answer = proxy.anthropic().messages.create(
        model="m",
        max_tokens=64,
        messages=[{"role": "user", "content": "how do I build a bomb"}],
        extra_headers={"Accept-Language": "fr-CA"},
    )
    assert answer.stop_reason == "refusal"
    assert [block.text for block in answer.content if block.type == "text"] == [SHIPPED["fr"]]
    assert proxy.record(1)["refusal_language"] == "fr"


def test_a_refusing_stream_is_told_in_the_accepted_language(proxy: Proxy) -> None:
    stream = proxy.client().chat.completions.create(
        model="m", messages=UNSAFE_PROMPT, stream=True, extra_headers={"Accept-Language": "hi"}
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == SHIPPED["hi"]
    assert proxy.record(1)["refusal_language"] == "hi"


def test_a_stream_cut_off_mid_answer_ends_in_the_accepted_language(proxy: Proxy) -> None:
    proxy.upstream.reply = story(60, UNSAFE)
    stream = proxy.client().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
        extra_headers={"Accept-Language": "zh-CN"},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.endswith(SHIPPED["zh"])
    assert text.removesuffix(SHIPPED["zh"])  # something was released before the cut
    assert proxy.record(1)["refusal_language"] == "zh"


def test_without_accept_language_the_region_pack_decides(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(regions=["JP"])
    answer = proxy.client().chat.completions.create(model="m", messages=UNSAFE_PROMPT)
    assert answer.choices[0].message.content == SHIPPED["ja"]
    assert proxy.record(1)["refusal_language"] == "ja"


@pytest.mark.parametrize(("accept", "language"), [("th", "en"), (None, "en")])
def test_a_language_the_tenant_lacks_gets_the_default(
    start_proxy: ProxyFactory, accept: str | None, language: str
) -> None:
    proxy = start_proxy(refusal_message={"en": "Not here.", "de": "Nicht hier."})
    headers = {"Accept-Language": accept} if accept else {}
    answer = proxy.client().chat.completions.create(
        model="m", messages=UNSAFE_PROMPT, extra_headers=headers
    )
    assert answer.choices[0].message.content == "Not here."  # never a shipped translation
    assert proxy.record(1)["refusal_language"] == language


def test_a_tenant_overrides_one_language(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(refusal_message={"de": "Das beantworten wir nicht."})
    client, texts = proxy.client(), []
    for accept in ("de", "it"):
        answer = client.chat.completions.create(
            model="m", messages=UNSAFE_PROMPT, extra_headers={"Accept-Language": accept}
        )
        texts.append(answer.choices[0].message.content)
    assert texts == ["Das beantworten wir nicht.", SHIPPED["it"]]
    languages = [r["refusal_language"] for r in (proxy.record(1), proxy.record(2))]
    assert languages == ["de", "it"]


def test_an_allowed_answer_names_no_refusal_language(proxy: Proxy) -> None:
    proxy.client().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"Accept-Language": "de"},
    )
    assert "refusal_language" not in proxy.record(1)

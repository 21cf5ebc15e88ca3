"""Images and video end to end: the guard and the upstream see the same bytes; bad media is 400."""

from __future__ import annotations

import base64
import io
import ipaddress
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardproxy.media.fetch import ImageFetcher
from tests.conftest import ProxyFactory
from tests.fakes.server import run_in_thread
from tests.media.test_video import make_video

RED = (220, 20, 20)


def png(color: tuple[int, int, int] = (40, 60, 200), size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def decoded(url: str) -> bytes:
    return base64.b64decode(url.partition(",")[2])


def is_red(url: str) -> list[str]:
    """The fake guard's eyes: a mostly red image is unsafe."""
    with Image.open(io.BytesIO(decoded(url))) as image:
        red, _, blue = image.convert("RGB").getpixel((5, 5))  # type: ignore[misc]
    return ["Violence"] if red > 180 and blue < 60 else []


def parts(*media: dict[str, Any]) -> Any:
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, *media]}]


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": "low"}}


async def loopback(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address("127.0.0.1")]


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    served = png(size=(80, 60))

    async def image(request: Request) -> Response:
        return Response(served, media_type="image/png")

    app = Starlette(routes=[Route("/cat.png", image)])
    with run_in_thread(app) as url:
        yield url.replace("127.0.0.1", "images.test")


def test_data_url_image_same_bytes_reach_guard_and_upstream(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy()
    original = data_url(png(), "image/png")
    proxy.client().chat.completions.create(model="m", messages=parts(image_part(original)))
    assert proxy.guard.requests[0].check.image_url == original  # small PNG: sent unchanged
    forwarded = proxy.upstream.requests[0].json["messages"][0]["content"][1]
    assert forwarded == {"type": "image_url", "image_url": {"url": original, "detail": "low"}}


def test_fetched_image_is_forwarded_as_the_bytes_the_guard_judged(
    start_proxy: ProxyFactory, image_server: str
) -> None:
    fetcher = ImageFetcher(resolver=loopback, address_allowed=lambda ip: ip.is_loopback)
    proxy = start_proxy(fetcher=fetcher, images={"allow_http": True})
    proxy.client().chat.completions.create(
        model="m", messages=parts(image_part(f"{image_server}/cat.png"))
    )
    judged = proxy.guard.requests[0].check.image_url
    assert judged is not None
    assert judged.startswith("data:image/png;base64,")
    forwarded = proxy.upstream.requests[0].json["messages"][0]["content"][1]["image_url"]["url"]
    assert decoded(forwarded) == decoded(judged)


def test_each_image_is_judged_and_the_audit_names_the_unsafe_one(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy()
    proxy.guard.image_judge = is_red
    safe, unsafe = data_url(png(), "image/png"), data_url(png(RED), "image/png")
    answer = proxy.client().chat.completions.create(
        model="m", messages=parts(image_part(safe), image_part(unsafe))
    )
    assert answer.choices[0].finish_reason == "content_filter"
    assert proxy.upstream.requests == []
    checked = proxy.audit.records[-1]["input"]["parts"]
    unsafe_parts = [p["part"] for p in checked if p["status"] == "unsafe"]
    assert unsafe_parts == ["messages[0].content[2]"]


def test_an_unsafe_video_frame_blocks_the_request(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(video={"enabled": True, "fps": 2})
    proxy.guard.image_judge = is_red
    video = data_url(make_video("mp4", "libx264"), "video/mp4")
    answer = proxy.client().chat.completions.create(
        model="m", messages=parts({"type": "video_url", "video_url": {"url": video}})
    )
    assert answer.choices[0].finish_reason == "content_filter"
    frames = proxy.audit.records[-1]["input"]["parts"]
    assert any(p["status"] == "unsafe" and "@1." in p["part"] for p in frames)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,@@@", "base64"),
        ("http://images.example/cat.png", "http"),
        ("https://127.0.0.1/cat.png", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::ffff:127.0.0.1]/x.png", "loopback"),
        (data_url(b"%PDF-1.7 not an image", "image/png"), "unsupported"),
    ],
)
def test_bad_media_is_a_400_naming_the_part(
    start_proxy: ProxyFactory, url: str, reason: str
) -> None:
    proxy = start_proxy()
    with pytest.raises(openai.BadRequestError) as caught:
        proxy.client().chat.completions.create(model="m", messages=parts(image_part(url)))
    assert caught.value.param is not None
    assert caught.value.param.startswith("messages[0].content[1]")
    assert reason in caught.value.message.lower()
    assert proxy.guard.requests == []
    assert proxy.upstream.requests == []


def test_too_many_images_and_disabled_video_are_refused(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(images={"max_per_request": 1})
    image = image_part(data_url(png(), "image/png"))
    with pytest.raises(openai.BadRequestError, match="at most 1 images"):
        proxy.client().chat.completions.create(model="m", messages=parts(image, image))
    video = {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}
    with pytest.raises(openai.BadRequestError, match="video is not accepted"):
        proxy.client().chat.completions.create(model="m", messages=parts(video))


def test_images_are_judged_on_the_responses_and_messages_apis(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy()
    proxy.guard.image_judge = is_red
    safe, unsafe = png(), png(RED)
    responses_input: Any = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": data_url(unsafe, "image/png")},
            ],
        }
    ]
    blocked = proxy.client().responses.create(model="m", input=responses_input)
    assert blocked.status == "incomplete"

    def anthropic_image(data: bytes) -> Any:
        encoded = base64.b64encode(data).decode()
        source = {"type": "base64", "media_type": "image/png", "data": encoded}
        image = {"type": "image", "source": source}
        return [{"role": "user", "content": [image, {"type": "text", "text": "What?"}]}]

    client = proxy.anthropic()
    refused = client.messages.create(model="m", max_tokens=9, messages=anthropic_image(unsafe))
    assert refused.stop_reason == "refusal"
    assert proxy.upstream.requests == []
    allowed = client.messages.create(model="m", max_tokens=9, messages=anthropic_image(safe))
    assert allowed.stop_reason == "end_turn"
    forwarded = proxy.upstream.requests[0].json["messages"][0]["content"][0]
    assert forwarded["source"]["media_type"] == "image/png"
    assert base64.b64decode(forwarded["source"]["data"]) == safe  # the bytes the guard judged
    judged = [r.check.image_url for r in proxy.guard.requests if r.check.image_url]
    assert decoded(judged[-1]) == safe

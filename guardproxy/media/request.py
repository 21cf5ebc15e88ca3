"""The media of one chat request: prepared once, judged by the guard, forwarded as the same bytes.

A URL can answer differently on a second fetch, so by default (`images.forward: same_bytes`)
the upstream receives the bytes the guard judged, as a `data:` URL, never the URL itself.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace

from guardproxy.core.conversation import Conversation, MediaPart
from guardproxy.media.errors import MediaError
from guardproxy.media.fetch import ImageFetcher
from guardproxy.media.images import PreparedImage, prepare_image
from guardproxy.media.settings import ImagesSettings, VideoSettings
from guardproxy.media.video import VideoFrame, sample_video


@dataclass(frozen=True)
class GuardImage:
    label: str  # the part path, with the frame time for video: "messages[0].content[1]@2.0s"
    url: str  # the data: URL the guard receives


@dataclass(frozen=True)
class RequestMedia:
    images: tuple[tuple[MediaPart, PreparedImage], ...] = ()
    frames: tuple[tuple[MediaPart, VideoFrame], ...] = ()

    def guard_images(self) -> list[GuardImage]:
        """Every image and sampled frame; the guard takes one image per call."""
        images = [GuardImage(part.path, image.guard_data_url()) for part, image in self.images]
        frames = [
            GuardImage(f"{part.path}@{frame.timestamp_s:.1f}s", frame.image.guard_data_url())
            for part, frame in self.frames
        ]
        return images + frames

    def context_image(self) -> str | None:
        """The image that goes with an answer check: the model takes only one."""
        guard_images = self.guard_images()
        return guard_images[0].url if guard_images else None

    def forwarded(self, request: Conversation, forward: str) -> Conversation:
        """`request` with its images replaced by the judged bytes (unless `original_url`),
        each in its API's own part shape."""
        if not self.images or forward == "original_url":
            return request
        body = json.loads(request.raw)  # a copy to write into
        for part, image in self.images:
            *parents, last = part.location
            holder = body
            for step in parents:
                holder = holder[step]
            holder[last] = request.codec.with_media(holder[last], image.forward_data_url())
        raw = json.dumps(body, ensure_ascii=False).encode()
        return replace(request, raw=raw, body=body)


NO_MEDIA = RequestMedia()


async def prepare_media(
    request: Conversation, images: ImagesSettings, video: VideoSettings, fetcher: ImageFetcher
) -> RequestMedia:
    """Fetch and decode every image and video of the last user turn, under the tenant's caps.

    Any bad part is a `MediaError` (400) naming the part and the reason.
    """
    if not request.media:
        return NO_MEDIA
    image_parts = [m for m in request.media if m.kind == "image"]
    video_parts = [m for m in request.media if m.kind == "video"]
    _check_counts(image_parts, video_parts, images, video)
    prepared = await asyncio.gather(
        *(prepare_image(p.url, p.path, images, fetcher) for p in image_parts)
    )
    sampled = await asyncio.gather(
        *(sample_video(p.url, p.path, video, images, fetcher) for p in video_parts)
    )
    frames = tuple(
        (part, frame) for part, found in zip(video_parts, sampled, strict=True) for frame in found
    )
    return RequestMedia(tuple(zip(image_parts, prepared, strict=True)), frames)


def _check_counts(
    image_parts: list[MediaPart],
    video_parts: list[MediaPart],
    images: ImagesSettings,
    video: VideoSettings,
) -> None:
    if len(image_parts) > images.max_per_request:
        extra = image_parts[images.max_per_request]
        raise MediaError(extra.path, f"at most {images.max_per_request} images per request")
    if video_parts and not video.enabled:
        raise MediaError(video_parts[0].path, "video is not accepted for this key")

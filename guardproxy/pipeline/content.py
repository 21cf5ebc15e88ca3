"""What of an exchange's text the audit trail keeps, for tenants that opt in (`audit_content`).

`redacted` keeps the judged text with every PII and secret detector applied, whatever the
tenant's redaction policy; `full` keeps it as forwarded (the tenant's always-on masking) with
the secret detectors applied too: the trail keeps what was judged, never live credentials at
rest. Masking happens once, when the record is written, so the request path pays nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from guardproxy.pipeline.masking import Masker
from guardproxy.redaction import DETECTORS

CaptureMode = Literal["redacted", "full"]

# The detectors that find credentials (API keys, JWTs, private keys) rather than PII.
SECRET_DETECTORS = frozenset({"secret"})


@dataclass
class ContentCapture:
    mode: CaptureMode
    masker: Masker
    prompt: str = ""
    image: bool = False
    response: str | None = None

    def view(
        self, streamed_answer: str | None = None, released: str | None = None
    ) -> dict[str, object]:
        """`released`: what of a cut-off stream's answer reached the client."""
        types = self.masker.always | self._detectors()
        content: dict[str, object] = {"mode": self.mode}
        content["prompt"] = self.masker.mask(self.prompt, types)[0]
        if self.image:
            content["image"] = True
        response = self.response if self.response is not None else streamed_answer
        if response is not None:
            content["response"] = self.masker.mask(response, types)[0]
        if released is not None:
            content["released"] = self.masker.mask(released, types)[0]
        return content

    def _detectors(self) -> frozenset[str]:
        return frozenset(DETECTORS) if self.mode == "redacted" else SECRET_DETECTORS

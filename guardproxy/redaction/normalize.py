"""The copy of a text that detectors read: NFKC, invisible characters removed, plus an offset map;
and the copy a guard model judges (`guard_text`).

Detection runs on the normalised copy so that full-width digits (UAX #15 compatibility
decomposition), other scripts' decimal digits (Unicode category Nd, folded to ASCII: NFKC keeps
"٤١١١") and zero-width or bidi characters slipped into a value do not hide it; masking
applies to the original, so every normalised span maps back onto the characters that made it.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right

# Characters that render as nothing but split a token: zero-width space/non-joiner/joiner
# (U+200B..U+200D), word joiner (U+2060), BOM / zero-width no-break space (U+FEFF) and soft
# hyphen (U+00AD); the bidi controls of UAX #9 (LRM, RLM, embeddings, overrides and isolates).
INVISIBLE = frozenset(
    "\u00ad\u200b\u200c\u200d\u2060\ufeff"
    "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Unicode tag characters (U+E0000..U+E007F) carry hidden ASCII in "ASCII smuggling" prompts.
TAG_FIRST = 0xE0000
TAG_LAST = 0xE007F
INVISIBLE_CHARS = re.compile(f"[{re.escape(''.join(sorted(INVISIBLE)))}]")
TAG_CHARS = re.compile(f"[{chr(TAG_FIRST)}-{chr(TAG_LAST)}]")
# The tags that mirror printable ASCII (U+E0020..U+E007E); the others carry nothing.
TAG_SPACE, TAG_TILDE = TAG_FIRST + 0x20, TAG_FIRST + 0x7E


def guard_text(text: str) -> str:
    """`text` as a guard model should read it: as the reader and the LLM read it.

    Invisible characters are removed and the whole text is NFKC-normalised, so "bo" U+200B "mb"
    reaches the guard as "bomb", and full-width letters as ASCII. Tag characters are read as
    the ASCII they mirror, not dropped: LLMs decode them ("ASCII smuggling"), so the guard must
    see them too. Only the guard's copy; what is forwarded is never changed.
    """
    if text.isascii():
        return text
    visible = INVISIBLE_CHARS.sub("", text)
    if TAG_CHARS.search(visible) is not None:
        visible = TAG_CHARS.sub(_untagged, visible)
    return unicodedata.normalize("NFKC", visible)


def normalize(text: str) -> tuple[str, list[int]]:
    """The detection copy of `text` and its offset map.

    `offsets[i]` is where original character `i` starts in the copy (removed characters produce
    nothing); `offsets[len(text)]` is the copy's length. Each character is normalised on its own,
    so the copy of a concatenation is the concatenation of the copies.
    """
    if text.isascii():
        return text, list(range(len(text) + 1))
    parts: list[str] = []
    offsets: list[int] = []
    size = 0
    for char in text:
        offsets.append(size)
        piece = _normalize_char(char)
        parts.append(piece)
        size += len(piece)
    offsets.append(size)
    return "".join(parts), offsets


def to_original(span: tuple[int, int], offsets: list[int]) -> tuple[int, int]:
    """The original span whose characters produced the normalised `span`.

    A character whose NFKC form is cut by the span belongs to it whole; removed characters
    between the span's first and last character are inside it, those around it are not.
    """
    start, end = span
    first = char_at(offsets, start)
    if end <= start:
        return first, first
    return first, char_at(offsets, end - 1) + 1


def char_at(offsets: list[int], position: int) -> int:
    """The original index of the character that produced normalised `position`."""
    return bisect_right(offsets, position) - 1


def _untagged(match: re.Match[str]) -> str:
    code = ord(match.group())
    return chr(code - TAG_FIRST) if TAG_SPACE <= code <= TAG_TILDE else ""


def _normalize_char(char: str) -> str:
    if char < "\x80":
        return char
    if char in INVISIBLE or TAG_FIRST <= ord(char) <= TAG_LAST:
        return ""
    folded = unicodedata.normalize("NFKC", char)
    digit = unicodedata.decimal(folded, None) if len(folded) == 1 else None
    return folded if digit is None else str(digit)

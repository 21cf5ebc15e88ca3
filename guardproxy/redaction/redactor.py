"""Masking PII and secrets in a text: the configured detectors, overlap resolution, placeholders.

A tenant configures built-in detectors by name (`DETECTORS`), its own regexes and word lists.
Overlaps: the earliest match wins, and at the same start the longest; a later match that sticks
out past the winner keeps the part that sticks out as a span of its own, so nothing any detector
found is left readable. Spans are offsets into the ORIGINAL text (see `normalize.py`).
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from guardproxy.redaction.detectors import DETECTORS, WORD, WORD_TAIL, Detector, Rule, RuleDetector
from guardproxy.redaction.normalize import normalize, to_original

DEFAULT_PLACEHOLDER = "[REDACTED:{type}]"
CUSTOM_MAX_LENGTH = 256

# Which detectors a taxonomy category (guards/taxonomy.py) asks for when a policy says "redact".
# Only "PII/Privacy" names concrete, detectable data. "secret" is deliberately not tied to
# "Malware": credentials are masked because a tenant always lists `secret`, not because a guard
# judged the text to be malicious code.
CATEGORY_DETECTORS: dict[str, tuple[str, ...]] = {
    "PII/Privacy": ("email", "phone", "payment_card", "iban", "us_ssn", "ip_address"),
}

Candidate = tuple[int, int, str]  # (start, end, type) in normalised text


@dataclass(frozen=True)
class Span:
    """A masked region of the original text and the detector type that found it."""

    start: int
    end: int
    type: str


@dataclass(frozen=True)
class Source:
    """One rule of a configured detector, with the config name and type it reports under."""

    key: str
    rule: Rule
    type: str


class Redactor:
    """Finds and masks the configured detectors; build once per policy, use per request."""

    def __init__(
        self,
        detectors: Sequence[str] = (),
        patterns: Sequence[tuple[str, str]] = (),
        words: Sequence[tuple[str, Sequence[str]]] = (),
        placeholder: str = DEFAULT_PLACEHOLDER,
    ) -> None:
        built = [(name, _builtin(name)) for name in dict.fromkeys(detectors)]
        built += [(_custom(name), PatternDetector(name, regex)) for name, regex in patterns]
        built += [(_custom(name), WordListDetector(name, listed)) for name, listed in words]
        self._detectors = _by_key(built)
        self.placeholder = placeholder

    @property
    def max_length(self) -> int:
        """The most normalised characters a `StreamRedactor` over this redactor holds back."""
        return max((source.rule.window for source in self.sources()), default=0)

    def sources(self, types: Collection[str] | None = None) -> tuple[Source, ...]:
        """The rules of the configured detectors, or of those named in `types` only.

        Names that are known but not configured are skipped (a category may ask for them).
        """
        keys = self._detectors if types is None else self._known(types)
        return tuple(
            Source(key, rule, self._detectors[key].name)
            for key in keys
            for rule in self._detectors[key].rules
        )

    def find(self, text: str, types: Collection[str] | None = None) -> list[Span]:
        """Sorted, non-overlapping spans of `text` to mask."""
        normalised, offsets = normalize(text)
        sources = self.sources(types)
        found = [(s, e, source.type) for source in sources for s, e in source.rule.scan(normalised)]
        return to_spans(resolve(found, 0), offsets, 0)

    def redact(self, text: str, types: Collection[str] | None = None) -> tuple[str, list[Span]]:
        """`text` with every span replaced by its placeholder, and the spans."""
        spans = self.find(text, types)
        return self.mask(text, spans), spans

    def label(self, kind: str) -> str:
        return self.placeholder.replace("{type}", kind)

    def mask(
        self, text: str, spans: Iterable[Span], start: int = 0, stop: int | None = None
    ) -> str:
        """`text[start:stop]` with `spans` (which must lie inside it) replaced by placeholders."""
        parts: list[str] = []
        at = start
        for span in spans:
            parts += (text[at : span.start], self.label(span.type))
            at = span.end
        parts.append(text[at:stop])
        return "".join(parts)

    def _known(self, types: Collection[str]) -> list[str]:
        unknown = sorted(set(types) - set(self._detectors) - set(DETECTORS))
        if unknown:
            raise ValueError(f"unknown redaction types {unknown} (known: {self._names()})")
        return [key for key in self._detectors if key in types]

    def _names(self) -> str:
        return ", ".join(sorted({*DETECTORS, *self._detectors}))


def resolve(found: Iterable[Candidate], floor: int) -> list[Candidate]:
    """Non-overlapping pieces of `found`, starting at `floor` or later (see module docstring)."""
    pieces: list[Candidate] = []
    end = floor
    for start, stop, kind in sorted(found, key=lambda item: (item[0], -item[1])):
        if stop > end:
            pieces.append((max(start, end), stop, kind))
            end = stop
    return pieces


def to_spans(pieces: Iterable[Candidate], offsets: list[int], floor: int) -> list[Span]:
    """Normalised pieces as original spans; a character that two pieces share goes to the first."""
    spans: list[Span] = []
    for start, end, kind in pieces:
        first, stop = to_original((start, end), offsets)
        first = max(first, spans[-1].end if spans else floor)
        if first < stop:
            spans.append(Span(first, stop, kind))
    return spans


def type_name(name: str) -> str:
    """A configured name as a placeholder type: upper snake case ("employee-id" -> EMPLOYEE_ID)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").upper()


class PatternDetector(RuleDetector):
    """A tenant's own regex, its matches limited to its widest match or `max_length` characters.

    Streams mask exactly what `redact` masks if its lookarounds stay within `LOOKBEHIND`
    characters before and `LOOKAHEAD` after the match, as the built-in rules' do.
    """

    def __init__(self, name: str, regex: str, max_length: int = CUSTOM_MAX_LENGTH) -> None:
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise ValueError(f"redaction pattern {name!r}: invalid regex: {exc}") from exc
        if pattern.match(""):
            raise ValueError(f"redaction pattern {name!r}: regex matches the empty string")
        self.name = type_name(name)
        self.rules = (Rule(pattern, max(1, min(max_length, _widest(pattern)))),)


class WordListDetector(RuleDetector):
    """Whole words or phrases, any case; inner spaces match 1 to 3 whitespace characters."""

    def __init__(self, name: str, words: Iterable[str]) -> None:
        found = {tuple(normalize(word)[0].split()) for word in words} - {()}
        if not found:
            raise ValueError(f"redaction word list {name!r} has no words")
        # Longest first: the regex alternation takes the first that fits, not the longest.
        phrases = sorted(found, key=lambda phrase: (-len(" ".join(phrase)), phrase))
        alternatives = "|".join(_phrase_regex(phrase) for phrase in phrases)
        pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        longest = max(len(" ".join(phrase)) + 2 * (len(phrase) - 1) for phrase in phrases)
        single = all(len(phrase) == 1 and WORD.fullmatch(phrase[0]) for phrase in phrases)
        initials = "".join(sorted({re.escape(phrase[0][0]) for phrase in phrases}))
        anchor = re.compile(f"[{initials}]", re.IGNORECASE)
        tail = WORD_TAIL if single else None
        self.name = type_name(name)
        self.rules = (Rule(pattern, longest, tail=tail, anchor=anchor),)


def _phrase_regex(phrase: tuple[str, ...]) -> str:
    return r"\s{1,3}".join(re.escape(word) for word in phrase)


def _widest(pattern: re.Pattern[str]) -> int:
    """The longest text `pattern` can match, by CPython's own parser; unknown means unbounded."""
    try:
        parsed = importlib.import_module("re._parser").parse(pattern.pattern, pattern.flags)
        return int(parsed.getwidth()[1])
    except (ImportError, AttributeError, TypeError, ValueError):
        return CUSTOM_MAX_LENGTH


def _builtin(name: str) -> Detector:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r} (known: {', '.join(sorted(DETECTORS))})")
    return DETECTORS[name]()


def _custom(name: str) -> str:
    if name in DETECTORS:
        raise ValueError(f"redaction name {name!r} is a built-in detector's name")
    return name


def _by_key(built: Iterable[tuple[str, Detector]]) -> dict[str, Detector]:
    detectors: dict[str, Detector] = {}
    for key, detector in built:
        if key in detectors:
            raise ValueError(f"redaction name {key!r} is used twice")
        detectors[key] = detector
    return detectors


class CountingRedactor(Redactor):
    """A redactor's detectors, counting every span it masks by type into `tally`: one per
    request and direction, so the metrics can say what was masked (never the text)."""

    def __init__(self, base: Redactor, tally: Counter[str]) -> None:
        self._detectors = base._detectors
        self.placeholder = base.placeholder
        self.tally = tally

    def mask(
        self, text: str, spans: Iterable[Span], start: int = 0, stop: int | None = None
    ) -> str:
        spans = list(spans)
        self.tally.update(span.type for span in spans)
        return super().mask(text, spans, start, stop)

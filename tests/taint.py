"""Maximal requests and answers built from the official SDKs' typed params and response models,
with a marker in every string.

Each string leaf of a request is `taint NNNN` (a space in it, so it is never mistaken for an
identifier), each Literal its first value, each union of objects every one of its variants
where a list holds them. When an SDK grows a field, the maximal request grows with it.
"""

from __future__ import annotations

import itertools
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import pydantic
import typing_extensions
from typing_extensions import get_type_hints, is_typeddict

WRAPPERS = (
    typing.Required,
    typing.NotRequired,
    typing.Annotated,
    typing_extensions.Required,
    typing_extensions.NotRequired,
    typing_extensions.Annotated,
)

MARKER = re.compile(r"taint \d{4}")
MAX_DEPTH = 9
# A field's value where a marker would make no request at all (the stream flag, the model).
FIXED: Mapping[str, Any] = {"stream": False, "model": "m", "n": 1, "max_tokens": 64}


class Tainter:
    def __init__(self) -> None:
        self._numbers: Iterator[int] = itertools.count(1)

    def marker(self) -> str:
        return f"taint {next(self._numbers):04d}"

    def build(self, hint: Any, depth: int = 0) -> Any:
        origin, args = get_origin(hint), get_args(hint)
        if origin in WRAPPERS:
            return self.build(args[0], depth)
        if hint is str:
            return self.marker()
        if hint is bool:
            return False
        if hint is int:
            return 1
        if hint is float:
            return 0.5
        if hint in (object, Any):
            return self.marker()
        if origin is Literal or origin is typing_extensions.Literal:
            return args[0]
        if is_object(hint):
            return self._object(hint, depth) if depth < MAX_DEPTH else None
        if origin in (Union, types.UnionType):
            return self.build(_richest(args), depth)
        if origin in (list, Iterable, Sequence) or _is_iterable(origin):
            return self._items(args[0] if args else str, depth + 1)
        if origin in (dict, Mapping):
            return {self.marker(): self.build(args[1] if len(args) > 1 else str, depth + 1)}
        return None  # bytes, files, None: nothing a JSON body carries

    def _object(self, hint: Any, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in fields_of(hint).items():
            value = FIXED[name] if name in FIXED else self.build(field, depth + 1)
            if value is not None:
                out[name] = value
        return out

    def _items(self, item: Any, depth: int) -> list[Any]:
        """Every object variant of a union as its own item, else one item."""
        variants = _variants(item)
        objects = [v for v in variants if is_object(v)]
        built = [self.build(v, depth) for v in objects] if objects else [self.build(item, depth)]
        return [value for value in built if value is not None]


def is_object(hint: Any) -> bool:
    """A TypedDict (a request's params) or a pydantic model (an answer)."""
    return is_typeddict(hint) or (isinstance(hint, type) and issubclass(hint, pydantic.BaseModel))


def fields_of(hint: Any) -> dict[str, Any]:
    """An object type's fields by their JSON names, with their types."""
    if is_typeddict(hint):
        return dict(get_type_hints(hint, include_extras=True))
    return {(f.alias or name): f.annotation for name, f in hint.model_fields.items()}


def variants(hint: Any) -> list[Any]:
    """The object types of a union (a stream event, a content block), each on its own."""
    return [v for v in _variants(hint) if is_object(v)]


def _variants(hint: Any) -> list[Any]:
    origin, args = get_origin(hint), get_args(hint)
    if origin in WRAPPERS:
        return _variants(args[0])
    if origin in (Union, types.UnionType):
        return [v for arg in args for v in _variants(arg)]
    return [hint]


def _richest(options: Sequence[Any]) -> Any:
    """Of a union, the option with the most to carry: an object, then a list, then text."""

    def weight(option: Any) -> int:
        inner = _variants(option)
        objects = [v for v in inner if is_object(v)]
        if objects:
            return 3 + max(len(fields_of(v)) for v in objects)
        if any(get_origin(v) in (list, Iterable) or _is_iterable(get_origin(v)) for v in inner):
            return 2
        return 1 if any(v is str for v in inner) else 0

    return max(options, key=weight)


def _is_iterable(origin: Any) -> bool:
    return isinstance(origin, type) and origin.__name__ in {"Iterable", "Sequence", "List"}


def markers(value: Any) -> set[str]:
    return set(MARKER.findall(value if isinstance(value, str) else repr(value)))


def drop(body: dict[str, Any], path: str) -> bool:
    """Remove the value at `path` (`messages[3].content[1].text`); False if there is none."""
    steps: list[str | int] = [
        int(step) if step.isdigit() else step for step in re.findall(r"[^.\[\]]+", path)
    ]
    holder: Any = body
    for step in steps[:-1]:
        try:
            holder = holder[step]
        except (KeyError, IndexError, TypeError):
            return False
    last = steps[-1] if steps else None
    try:
        del holder[last]
    except (KeyError, IndexError, TypeError):
        return False
    return True

"""Labelled sets for `guardproxy eval`: JSONL, CSV or Parquet files, in guardproxy's own
layout or in the layouts of public safety sets as they are published.

Own layout: `prompt`, optional `response`, `image` and `tool`, and `label` (safe/unsafe, 0/1,
true/false) or `categories` (a list, or a comma-separated string; non-empty means unsafe).
`tool` is a tool result the prompt came with (a list of them in JSONL or Parquet), judged as
the proxy judges `tool` messages, so a guard limited to `turns: [tool]` is scored on it. The
public layouts carry none.
Public layouts, detected from their columns (or named with `--format`):
- Aegis 2.0 / Nemotron Content Safety Dataset v2: `prompt`, `response`, `prompt_label`,
  `response_label`, `violated_categories`;
- XSTest: `prompt`, `label` (safe/unsafe), `type`;
- the OpenAI moderation evaluation set: `prompt` and 0/1 columns S, H, V, HR, SH, S3, H2, V2;
- ToxicChat: `user_input`, `toxicity` (0/1);
- BeaverTails: `prompt`, `response`, `is_safe`, `category` (name -> bool).
`hf:NAME[:SPLIT]` loads from the Hugging Face hub through `datasets`, when it is installed.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import mimetypes
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from guardproxy.errors import ConfigError

# The OpenAI moderation evaluation set's columns, in Nemotron's category names.
OPENAI_MODERATION = {
    "S": "Sexual",
    "H": "Hate/Identity Hate",
    "V": "Violence",
    "HR": "Harassment",
    "SH": "Suicide and Self Harm",
    "S3": "Sexual (minor)",
    "H2": "Threat",
    "V2": "Violence",
}
TRUE = {"unsafe", "1", "true", "yes", "harmful", "toxic"}
FALSE = {"safe", "0", "false", "no", "unharmful", "benign", ""}


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    unsafe: bool
    categories: tuple[str, ...] = ()
    response: str | None = None
    image: str | None = None
    tools: tuple[str, ...] = ()  # tool results, in order


Row = dict[str, Any]
Layout = Callable[[Row, int], Example]


def load_examples(source: str, layout: str = "auto", limit: int | None = None) -> list[Example]:
    rows = list(_rows(source))
    if not rows:
        raise ConfigError("the labelled set has no rows", source)
    adapt = LAYOUTS[detect(rows[0]) if layout == "auto" else layout]
    examples = [adapt(row, n) for n, row in enumerate(rows)]
    examples = examples[:limit] if limit else examples
    folder = Path(source).parent if not source.startswith("hf:") else Path()
    return [_with_image_file(e, folder) for e in examples]


def _with_image_file(example: Example, folder: Path) -> Example:
    """An `image` that is a file path (relative to the set's file) becomes a data: URL."""
    image = example.image
    if image is None or image.startswith(("http://", "https://", "data:")):
        return example
    path = folder / image
    if not path.is_file():
        raise ConfigError(f"row {example.id}: no image file {image!r}")
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return replace(example, image=f"data:{mime};base64,{data}")


def detect(row: Row) -> str:
    columns = set(row)
    if {"prompt_label", "prompt"} <= columns:
        return "aegis"
    if {"is_safe", "prompt"} <= columns:
        return "beavertails"
    if "user_input" in columns and "toxicity" in columns:
        return "toxicchat"
    if "prompt" in columns and set(OPENAI_MODERATION) & columns and "label" not in columns:
        return "openai-moderation"
    if "prompt" in columns and ("label" in columns or "categories" in columns):
        return "xstest" if "type" in columns and "categories" not in columns else "guardproxy"
    raise ConfigError(f"no known layout has the columns {sorted(columns)}")


def _rows(source: str) -> Iterator[Row]:
    if source.startswith("hf:"):
        yield from _hub(source[3:])
        return
    path = Path(source)
    if not path.is_file():
        raise ConfigError("no such file", source)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as lines:
            yield from (json.loads(line) for line in lines if line.strip())
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as rows:
            yield from csv.DictReader(rows)
    elif suffix == ".parquet":
        yield from _parquet(path)
    else:
        raise ConfigError("a labelled set is .jsonl, .csv or .parquet", source)


def _parquet(path: Path) -> Iterable[Row]:
    try:
        import pyarrow.parquet as parquet
    except ImportError as exc:
        raise ConfigError("Parquet needs pyarrow: pip install 'guardproxy[eval]'") from exc
    rows: list[Row] = parquet.read_table(path).to_pylist()
    return rows


def _hub(name: str) -> Iterable[Row]:
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError("hf: sets need the `datasets` package (pip install datasets)") from exc
    repo, _, split = name.partition(":")
    rows: Iterable[Row] = datasets.load_dataset(repo, split=split or "test")
    return rows


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ConfigError(f"a label must be safe/unsafe, 0/1 or true/false, not {value!r}")


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    text = str(value).strip()
    if text.startswith("["):
        return _names(json.loads(text))
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _id(row: Row, n: int) -> str:
    for column in ("id", "request_id", "prompt_id"):
        if row.get(column) not in (None, ""):
            return str(row[column])
    digest = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()
    return f"{n}-{digest[:12]}"


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _tools(value: Any) -> tuple[str, ...]:
    """A tool result, or a list of them; a string is one result whatever it holds (a tool
    may well answer with a JSON array)."""
    results = value if isinstance(value, list | tuple) else [value]
    return tuple(text for text in map(_text, results) if text is not None)


def own(row: Row, n: int) -> Example:
    categories = _names(row.get("categories"))
    unsafe = _flag(row["label"]) if "label" in row else bool(categories)
    return Example(
        _id(row, n),
        str(row["prompt"]),
        unsafe,
        categories,
        _text(row.get("response")),
        _text(row.get("image")),
        _tools(row.get("tool")),
    )


def aegis(row: Row, n: int) -> Example:
    """A response with its own label is an output example; otherwise the prompt is judged."""
    response = _text(row.get("response"))
    judged = row.get("response_label") if response and row.get("response_label") else None
    label = row["prompt_label"] if judged is None else judged
    categories = _names(row.get("violated_categories"))
    unsafe = _flag(label)
    return Example(
        _id(row, n),
        str(row["prompt"]),
        unsafe,
        categories if unsafe else (),
        response if judged else None,
    )


def openai_moderation(row: Row, n: int) -> Example:
    named = [name for column, name in OPENAI_MODERATION.items() if _flag(row.get(column, 0))]
    categories = tuple(dict.fromkeys(named))
    return Example(_id(row, n), str(row["prompt"]), bool(categories), categories)


def toxicchat(row: Row, n: int) -> Example:
    return Example(_id(row, n), str(row["user_input"]), _flag(row["toxicity"]))


def beavertails(row: Row, n: int) -> Example:
    raw = row.get("category") or {}
    named = raw if isinstance(raw, dict) else json.loads(str(raw))
    categories = tuple(name for name, on in named.items() if on)
    unsafe = not _flag(row["is_safe"])
    response = _text(row.get("response"))
    return Example(_id(row, n), str(row["prompt"]), unsafe, categories, response)


LAYOUTS: dict[str, Layout] = {
    "guardproxy": own,
    "xstest": own,
    "aegis": aegis,
    "openai-moderation": openai_moderation,
    "toxicchat": toxicchat,
    "beavertails": beavertails,
}

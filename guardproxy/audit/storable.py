"""Text every audit sink can store, whatever the record was built from.

A JSON escape such as "\\ud800" decodes to a lone surrogate, which has no UTF-8 form; PostgreSQL
also refuses NUL in `text` and `\\u0000` in `jsonb`. Both become U+FFFD before a record is
written, so one client's bad string never costs the trail another record.
"""

from __future__ import annotations

import json
import re
from typing import Any

UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
REPLACEMENT = "\ufffd"


def storable_text(text: str) -> str:
    return UNSTORABLE.sub(REPLACEMENT, text)


def storable(value: Any) -> Any:
    """`value` with every string in it (keys too, through dicts and lists) made storable."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def json_line(record: dict[str, Any]) -> bytes:
    """One record as a UTF-8 JSON line; raises TypeError or ValueError if it has no JSON form.

    With `ensure_ascii=False` a surrogate can only appear raw inside a JSON string (NUL is
    escaped), so replacing it in the encoded text equals encoding the cleaned record.
    """
    text = storable_text(json.dumps(record, ensure_ascii=False, default=str))
    return (text + "\n").encode("utf-8")

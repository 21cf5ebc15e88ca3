"""`guardproxy export-labels --tenant T [--since ISO] --out FILE.jsonl`: the decisions reviewers
labelled, as a labelled set in the layout `guardproxy eval` reads (datasets.py, `guardproxy`),
so `eval FILE.jsonl --tenant T --policy NEW.yaml` measures a candidate against what reviewers
said.

Each decision's newest label sets what the policy should have done:
- `correct`: what the live policy did (for a monitored tenant, what it would have done);
- `false_positive`: the content should have passed (safe);
- `false_negative`: it should have been stopped (unsafe).
`escalate` is no verdict and is left out, as are decisions without stored content
(`audit_content: none`: nothing to judge again) and a `correct` on a decision the guard never
ruled on (a guard failure, a rejected request, an upstream error). Every row left out is
counted by reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from guardproxy.audit.access import AccessLog
from guardproxy.audit.labels import Labelled, labelled_decisions
from guardproxy.audit.store import open_engine
from guardproxy.lifecycle.replay import recorded_action

POSITIVE = ("block", "redact")  # as scores.py counts a positive
NO_VERDICT = ("fail", "reject", "error")
SKIPPED = {
    "escalate": "labelled escalate (no verdict)",
    "no_content": "no stored content (audit_content: none)",
    "no_verdict": "labelled correct where the guard gave no verdict (fail, reject or error)",
}


@dataclass
class Exported:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    without_image: int = 0  # rows whose request carried an image the trail does not keep

    def write(self, out: Path) -> None:
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows))

    def summary(self, out: Path) -> str:
        lines = [f"wrote {len(self.rows)} labelled examples to {out}"]
        lines += [f"left out {n}: {SKIPPED[why]}" for why, n in sorted(self.skipped.items())]
        if self.without_image:
            lines.append(
                f"{self.without_image} rows had an image, which is not stored: "
                "eval judges their text alone"
            )
        return "\n".join(lines)


def example_of(found: Labelled) -> dict[str, Any] | str:
    """The eval row for a labelled decision, or why it has none (a key of `SKIPPED`)."""
    record, content, label = found.record, found.content or {}, found.label
    if label.label == "escalate":
        return "escalate"
    if not content.get("prompt"):
        return "no_content"
    live = recorded_action(record)
    if label.label == "correct" and live in NO_VERDICT:
        return "no_verdict"
    unsafe = _expected_unsafe(label.label, live, record)
    row = {"id": record["request_id"], "prompt": content["prompt"]}
    if content.get("response") is not None:
        row["response"] = content["response"]
    return row | {
        "label": "unsafe" if unsafe else "safe",
        "categories": list(_categories(found, live)) if unsafe else [],
        "review": label.label,
        "reviewer": label.reviewer,
        "note": label.note,
        "live_action": live,
        "time": record.get("time"),
    }


def _expected_unsafe(label: str, live: str, record: dict[str, Any]) -> bool:
    if label == "false_positive":
        return False
    if label == "false_negative":
        return True
    return live in POSITIVE or bool(record.get("redacted"))  # correct: as the live policy did


def _categories(found: Labelled, live: str) -> tuple[str, ...]:
    """The reviewer's categories; where they named none, the guard's (a `correct` block)."""
    if found.label.categories:
        return found.label.categories
    record = found.record
    named = [c for d in ("input", "output") for c in (record.get(d) or {}).get("categories") or ()]
    return tuple(dict.fromkeys(named))


async def export_labels(url: str, tenant: str, since: datetime | None, actor: str) -> Exported:
    """The tenant's labelled decisions as eval rows, the export recorded as `actor`'s (when
    the rows leave the database, as the reviewer page records its downloads)."""
    engine = open_engine(url)
    exported = Exported()
    try:
        for found in await labelled_decisions(engine, tenant, since):
            row = example_of(found)
            if isinstance(row, str):
                exported.skipped[row] += 1
                continue
            exported.rows.append(row)
            exported.without_image += bool((found.content or {}).get("image"))
        detail = {"what": "labels", "tenant": tenant, "rows": len(exported.rows)}
        detail |= {"since": since.isoformat()} if since else {}
        await AccessLog(lambda: engine).write(actor, "export", None, None, detail)
    finally:
        await engine.dispose()
    return exported

"""The Aegis 2.0 / Nemotron Content Safety Dataset V2 taxonomy, as the guard prompts number it.

Two numberings exist and must never be mixed (guard-protocols.md §4): the 8B guards and
Nemotron-3 use 23 names (S13 "Needs Caution", S14 "Other"); the Reasoning-4B prompt drops
"Other", so its S14..S22 are the 8B list's S15..S23. Nemotron 3.5 (v1.1) injects S1..S24: the
first 23 are this list, the name of S24 is unconfirmed (nemotron-3.5-v1.1.md §2.5), so a name
the proxy does not know is never an error (it takes the direction's `default`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from guardproxy.core.verdict import GuardPolicy

OTHER = "Other"

# Verbatim from NVIDIA's 8B prompt (NeMo Guardrails nemotron-safety-guard-deployment.mdx),
# without the trailing ".", in S1..S23 order.
NEMOTRON_CATEGORIES: tuple[str, ...] = (
    "Violence",
    "Sexual",
    "Criminal Planning/Confessions",
    "Guns and Illegal Weapons",
    "Controlled/Regulated Substances",
    "Suicide and Self Harm",
    "Sexual (minor)",
    "Hate/Identity Hate",
    "PII/Privacy",
    "Harassment",
    "Threat",
    "Profanity",
    "Needs Caution",
    OTHER,
    "Manipulation",
    "Fraud/Deception",
    "Malware",
    "High Risk Gov Decision Making",
    "Political/Misinformation/Conspiracy",
    "Copyright/Trademark/Plagiarism",
    "Unauthorized Advice",
    "Illegal Activity",
    "Immoral/Unethical",
)

# The Reasoning-4B "Recommended Prompt Template" lists the same names minus "Other" (S1..S22).
REASONING_4B_CATEGORIES: tuple[str, ...] = tuple(
    name for name in NEMOTRON_CATEGORIES if name != OTHER
)

CATEGORY_CODE = re.compile(r"S([1-9][0-9]*)", re.IGNORECASE)


def render_taxonomy(categories: Sequence[str]) -> str:
    """The prompt's category block: one `S<n>: <name>.` line per category."""
    return "\n".join(f"S{number}: {name}." for number, name in enumerate(categories, start=1))


RULES_HEADING = "Additional policy rules:"
POLICY_PREAMBLE = "Content is unsafe if it falls into any of these categories:"


def render_policy(base: Sequence[str], policy: GuardPolicy) -> tuple[str, tuple[str, ...]]:
    """The category block for `policy` on top of a protocol's `base` list, and the numbering
    that resolves `S<n>` codes in the model's answer (suppressed names keep their numbers).

    Static parts come first and in a fixed order, so identical tenants send identical
    prefixes (the guard server's prefix cache hits).
    """
    if policy.is_default:
        return render_taxonomy(base), tuple(base)
    numbering = policy_numbering(base, policy)
    lines = [f"S{n}: {name}." for n, name in enumerate(base, 1) if name not in policy.suppressed]
    for n, (name, description) in enumerate(policy.custom, len(base) + 1):
        lines.append(f"S{n}: {name}." + (f"\n{description.strip()}" if description else ""))
    if policy.rules.strip():
        lines += ["", RULES_HEADING, policy.rules.strip()]
    return "\n".join(lines), numbering


def render_custom_taxonomy(base: Sequence[str], policy: GuardPolicy) -> str:
    """Nemotron 3.5 Mode B: NVIDIA's `- Name (description)` lines (custom_policy_cookbook), the
    kept built-ins first, then custom categories, then the rules as a block after the list."""
    kept = [f"- {name}" for name in (*base, *policy.extra) if name not in policy.suppressed]
    custom = [_bullet(name, description) for name, description in policy.custom]
    return _with_rules([*kept, *custom], policy.rules)


def render_custom_policy(base: Sequence[str], policy: GuardPolicy) -> str:
    """Nemotron 3.5 Mode A free text: it replaces the built-in behaviour entirely, so a full
    policy restates the categories to keep; a rules-only call sends the rules alone."""
    if not policy.lists_categories:
        return policy.rules.strip()
    listed = render_custom_taxonomy(
        base, GuardPolicy(policy.suppressed, policy.custom, "", extra=policy.extra)
    )
    return _with_rules([POLICY_PREAMBLE, listed], policy.rules)


def _bullet(name: str, description: str) -> str:
    text = " ".join(description.split())
    return f"- {name} ({text})" if text else f"- {name}"


def _with_rules(lines: list[str], rules: str) -> str:
    if rules.strip():
        lines = [*lines, "", RULES_HEADING, rules.strip()]
    return "\n".join(lines)


def policy_numbering(base: Sequence[str], policy: GuardPolicy) -> tuple[str, ...]:
    """What `S<n>` means under `policy`: the base list, then its custom categories."""
    return (*base, *(name for name, _ in policy.custom))


def canonical_category(
    raw: str, numbering: Sequence[str] = NEMOTRON_CATEGORIES, names: Sequence[str] = ()
) -> str:
    """A category the model returned, as a canonical name; unknown names are kept, trimmed.

    `numbering` is the list of the prompt that produced `raw`: it resolves `S<n>` codes.
    `names` are more names the prompt listed without codes (Nemotron 3.5 Mode B).
    """
    name = raw.strip()
    code = CATEGORY_CODE.fullmatch(name)
    if code is not None:
        index = int(code.group(1)) - 1
        return numbering[index] if index < len(numbering) else name
    known = (*numbering, *names)
    return _known(name, known) or _known(_without_description(name), known) or name


def _known(name: str, numbering: Sequence[str]) -> str | None:
    folded = name.casefold()
    return next((k for k in (*numbering, *NEMOTRON_CATEGORIES) if k.casefold() == folded), None)


def _without_description(name: str) -> str:
    """`Name (description)` as a Mode B list spells it, should the model echo the line."""
    head, found, _ = name.partition(" (")
    return head.strip().rstrip(".") if found and name.endswith(")") else name.rstrip(".")


def parse_category_list(
    text: str, numbering: Sequence[str] = NEMOTRON_CATEGORIES, names: Sequence[str] = ()
) -> tuple[str, ...]:
    """A comma-separated category list, canonicalised, empties and repeats dropped."""
    found = (canonical_category(part, numbering, names) for part in text.split(","))
    return tuple(dict.fromkeys(name for name in found if name))

"""Loading the policies folder: tenants, `extends` inheritance, region packs, cross-checks.

    policies/
      _base.yaml          shared defaults; every tenant without `extends` inherits from it
      <tenant>.yaml       one tenant each (`extends: <file stem or tenant name>` to inherit)
      regions/<CODE>.yaml regional rule packs, each naming its language
      regions/_refusals.yaml  the default refusal in each shipped language

A set with any problem is rejected whole, every problem reported as `file:line: message`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from guardproxy.config import EXCLUSIVE_KWARGS, Settings
from guardproxy.core.verdict import GuardInput, GuardPolicy
from guardproxy.errors import ConfigError
from guardproxy.guards.protocols import (
    GUARD_CAPABILITIES,
    GUARD_PROTOCOLS,
    KNOWN_CATEGORIES,
    GuardCapabilities,
    GuardProtocol,
    guard_calls,
)
from guardproxy.pipeline.masking import Masker
from guardproxy.policy.chain import answers_judged, with_answer_judges
from guardproxy.policy.model import (
    DEFAULT_REFUSAL,
    GUARD_KEYS,
    PolicySet,
    RegionPack,
    TenantPolicy,
    key_digest,
)
from guardproxy.policy.profile import build_profiles
from guardproxy.policy.refusals import (
    REFUSALS_FILE,
    Refusals,
    ShippedRefusals,
    tenant_refusals,
)
from guardproxy.redaction import DETECTORS
from guardproxy.yamlfile import InvalidConfig, YamlDocument, load_model, read_yaml

BASE_STEM = "_base"
REGIONS_FOLDER = "regions"
TAXONOMY = frozenset(KNOWN_CATEGORIES)


class Problems(list[ConfigError]):
    def catching(self, load: Any, *args: Any) -> Any:
        """Run `load(*args)`; collect its config errors and return None instead of raising."""
        try:
            return load(*args)
        except InvalidConfig as exc:
            self.extend(exc.problems)
        except ConfigError as exc:
            self.append(exc)
        return None


def load_policies(settings: Settings, env: dict[str, str]) -> PolicySet:
    """Load and check every tenant and region pack; any problem rejects the whole set."""
    folder = settings.policies_dir()
    if not folder.is_dir():
        raise ConfigError(f"policies folder {str(folder)!r} does not exist", str(folder))
    problems = Problems()
    regions = _load_regions(folder / REGIONS_FOLDER, env, problems)
    shipped = _load_shipped_refusals(folder / REGIONS_FOLDER, env, problems)
    documents = _read_all(folder.glob("*.yaml"), env, problems)
    tenants = [
        loaded
        for stem in sorted(documents)
        if not stem.startswith("_")
        and (loaded := problems.catching(_load_tenant, stem, documents)) is not None
    ]
    problems.extend(_cross_check(settings, tenants, regions))
    if problems:
        raise InvalidConfig(problems)
    tenants = [(with_answer_judges(settings, policy), doc) for policy, doc in tenants]
    if not tenants:
        raise ConfigError("no tenant policies (*.yaml) found", str(folder))
    shadows = {
        policy.tenant: shadow
        for policy, doc in tenants
        if policy.shadow
        and (shadow := problems.catching(_load_shadow, policy, doc, documents)) is not None
    }
    problems.extend(_cross_check(settings, [(s, d) for s, d in shadows.values()], regions))
    if problems:
        raise InvalidConfig(problems)
    shadows = {t: (with_answer_judges(settings, s), d) for t, (s, d) in shadows.items()}
    by_key = {digest: policy for policy, _ in tenants for digest in policy.key_digests()}
    packs = {r.region: r for r in regions}
    tenant_set = {p.tenant: p for p, _ in tenants}
    shadow_set = {t: s for t, (s, _) in shadows.items()}
    refusals = _refusals(tenant_set.values(), shipped, packs)
    return PolicySet(tenant_set, by_key, packs, shadow_set, refusals)


def _load_shipped_refusals(folder: Path, env: dict[str, str], problems: Problems) -> dict[str, str]:
    """The default refusal's translations (`regions/_refusals.yaml`); none without the file."""
    path = folder / f"{REFUSALS_FILE}.yaml"
    if not path.is_file():
        return {}
    document = problems.catching(read_yaml, path, env)
    shipped = document and problems.catching(load_model, ShippedRefusals, document)
    return dict(shipped.refusals) if shipped else {}


def _refusals(
    tenants: Iterable[TenantPolicy], shipped: dict[str, str], packs: dict[str, RegionPack]
) -> dict[str, Refusals]:
    languages = {code: pack.language for code, pack in packs.items() if pack.language}
    return {
        t.tenant: tenant_refusals(t.refusal_message, shipped, languages, DEFAULT_REFUSAL)
        for t in tenants
    }


def _read_all(
    paths: Iterable[Path], env: dict[str, str], problems: Problems
) -> dict[str, YamlDocument]:
    documents = {path.stem: problems.catching(read_yaml, path, env) for path in sorted(paths)}
    return {stem: doc for stem, doc in documents.items() if doc is not None}


def _load_tenant(
    stem: str, documents: dict[str, YamlDocument]
) -> tuple[TenantPolicy, YamlDocument]:
    merged = _resolve(stem, documents, ())
    return load_model(TenantPolicy, merged), merged


def _load_shadow(
    tenant: TenantPolicy, merged: YamlDocument, documents: dict[str, YamlDocument]
) -> tuple[TenantPolicy, YamlDocument]:
    """The tenant's `shadow: NAME`: `_NAME.yaml` (or NAME.yaml for a NAME starting with "_")
    merged over the tenant, as `extends` would."""
    name = tenant.shadow or ""
    stem = name if name.startswith("_") else f"_{name}"
    if stem not in documents:
        raise merged.error(("shadow",), f"shadow: no policy file {stem}.yaml")
    top = documents[stem]
    if not isinstance(top.data, dict):
        raise top.error((), "a policy file must be a mapping")
    shadow = _merged(top, merged)
    data = {k: v for k, v in shadow.data.items() if k not in ("shadow", "extends")}
    shadow = YamlDocument(data, shadow.file, shadow.lines, shadow.files)
    return load_model(TenantPolicy, shadow), shadow


def _resolve(stem: str, documents: dict[str, YamlDocument], chain: tuple[str, ...]) -> YamlDocument:
    """The document with everything it inherits merged under it."""
    document = documents[stem]
    if not isinstance(document.data, dict):
        raise document.error((), "a policy file must be a mapping")
    parent = document.data.get("extends", BASE_STEM if BASE_STEM in documents else None)
    own = YamlDocument(
        {k: v for k, v in document.data.items() if k != "extends"},
        document.file,
        document.lines,
        document.files,
    )
    if parent is None or stem == BASE_STEM:
        return own
    parent_stem = _find(parent, documents)
    if parent_stem is None:
        raise document.error(("extends",), f"extends: no policy file or tenant named {parent!r}")
    if parent_stem in (*chain, stem):
        cycle = " -> ".join((*chain, stem, parent_stem))
        raise document.error(("extends",), f"extends: cycle {cycle}")
    return _merged(own, _resolve(parent_stem, documents, (*chain, stem)))


def _merged(top: YamlDocument, base: YamlDocument) -> YamlDocument:
    """`top` over `base`, as `extends` merges; a `guard` or `guards` in `top` replaces either
    in `base`, so a tenant may give a chain over a base that names one guard."""
    named = isinstance(top.data, dict) and any(key in top.data for key in GUARD_KEYS)
    if named and isinstance(base.data, dict):
        data = {k: v for k, v in base.data.items() if k not in GUARD_KEYS}
        base = YamlDocument(data, base.file, base.lines, base.files)
    return top.merged_over(base)


def _find(name: Any, documents: dict[str, YamlDocument]) -> str | None:
    if not isinstance(name, str):
        return None
    if name in documents:
        return name
    named = (
        s for s, d in documents.items() if isinstance(d.data, dict) and d.data.get("tenant") == name
    )
    return next(named, None)


def _load_regions(folder: Path, env: dict[str, str], problems: Problems) -> list[RegionPack]:
    if not folder.is_dir():
        return []
    packs: list[RegionPack] = []
    paths = (path for path in folder.glob("*.yaml") if not path.stem.startswith("_"))
    for stem, document in _read_all(paths, env, problems).items():
        pack = problems.catching(load_model, RegionPack, document)
        if pack is None:
            continue
        if pack.region != stem:
            problems.append(document.error(("region",), f"region: {pack.region!r} in {stem}.yaml"))
        problems.extend(
            _check_categories(
                document,
                pack.categories.input,
                ("categories", "input"),
                {c.name for c in pack.custom_categories},
            )
        )
        problems.extend(
            _check_categories(
                document,
                pack.categories.output,
                ("categories", "output"),
                {c.name for c in pack.custom_categories},
            )
        )
        packs.append(pack)
    known = {pack.region for pack in packs}
    for pack in packs:
        for code in pack.extends:
            if code not in known or code == pack.region:
                problems.append(ConfigError(f"extends: unknown region {code!r}", pack.region))
    return packs


def _cross_check(
    settings: Settings, tenants: list[tuple[TenantPolicy, YamlDocument]], regions: list[RegionPack]
) -> list[ConfigError]:
    problems: list[ConfigError] = []
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    admin = {key_digest(key) for key in settings.admin.all_keys()}
    packs = {pack.region: pack for pack in regions}
    for policy, doc in tenants:
        problems += _check_references(settings, policy, doc, packs)
        if policy.tenant in names:
            problems.append(doc.error(("tenant",), f"tenant: {policy.tenant!r} defined twice"))
        names.add(policy.tenant)
        for i, digest in enumerate(policy.key_digests()):
            if digest in digests and digests[digest] != policy.tenant:
                message = f"keys: key {i + 1} is also a key of tenant {digests[digest]!r}"
                problems.append(doc.error(("keys", i), message))
            if digest in admin:  # checked on every load, so a hot reload cannot add one
                message = f"keys: key {i + 1} is also an admin key; give the tenant its own"
                problems.append(doc.error(("keys", i), message))
            digests[digest] = policy.tenant
    return problems


def _check_references(
    settings: Settings, policy: TenantPolicy, doc: YamlDocument, packs: dict[str, RegionPack]
) -> list[ConfigError]:
    problems = _check_guard_names(settings, policy, doc)
    if not problems and policy.output.enabled and not answers_judged(settings, policy):
        # Fail closed: output checks that no guard of the chain would run let every answer
        # through unjudged.
        message = (
            "output checks are on but no guard of this tenant judges answers (a classifier "
            "does not unless its guards: entry says output: true); add a content-safety "
            "guard, or set output: {enabled: false}"
        )
        problems.append(doc.error(("output",), message))
    if policy.upstream not in settings.upstreams:
        problems.append(doc.error(("upstream",), f"upstream: unknown upstream {policy.upstream!r}"))
    for i, server in enumerate(policy.mcp.servers):
        if server not in settings.mcp_servers:
            message = f"mcp.servers: unknown MCP server {server!r} (see mcp_servers)"
            problems.append(doc.error(("mcp", "servers", i), message))
    for key in ("regions", "allowed_regions"):
        for i, code in enumerate(getattr(policy, key)):
            if code not in packs:
                problems.append(doc.error((key, i), f"{key}: unknown region {code!r}"))
    for i, name in enumerate(policy.redaction.detectors):
        if name not in DETECTORS:
            known = ", ".join(sorted(DETECTORS))
            message = f"redaction.detectors: unknown detector {name!r} (known: {known})"
            problems.append(doc.error(("redaction", "detectors", i), message))
    try:
        Masker.for_policy(policy.redaction)
    except ValueError as exc:
        problems.append(doc.error(("redaction",), f"redaction: {exc}"))
    custom = {c.name for c in policy.custom_categories}
    custom |= {
        c.name
        for code in policy.regions + policy.allowed_regions
        if code in packs
        for c in packs[code].custom_categories
    }
    for i, category in enumerate(policy.custom_categories):
        if category.name in TAXONOMY:
            message = f"custom_categories: {category.name!r} is already a taxonomy category"
            problems.append(doc.error(("custom_categories", i, "name"), message))
    custom |= set(policy.extra_categories)
    problems += _check_categories(doc, policy.input.categories, ("input", "categories"), custom)
    problems += _check_categories(doc, policy.output.categories, ("output", "categories"), custom)
    for name in policy.guard_names if not problems else ():
        problems += _check_guard_fits(settings, policy, doc, packs, name)
    return problems


def _check_guard_names(
    settings: Settings, policy: TenantPolicy, doc: YamlDocument
) -> list[ConfigError]:
    """Every guard of the chain is configured (the key path as the file gave it)."""
    single = len(policy.guards) == 1 and doc.lines.get(("guard",)) is not None
    return [
        doc.error(("guard",) if single else ("guards", i), f"guard: unknown guard {entry.guard!r}")
        for i, entry in enumerate(policy.guards)
        if entry.guard not in settings.guards
    ]


def _check_guard_fits(
    settings: Settings,
    policy: TenantPolicy,
    doc: YamlDocument,
    packs: dict[str, RegionPack],
    name: str,
) -> list[ConfigError]:
    """Refuse a policy a guard of the tenant cannot be told: custom categories or rules for a
    fixed-taxonomy model, or a policy_mode its protocol does not have."""
    protocol = settings.guards[name].protocol
    caps = GUARD_CAPABILITIES[protocol]
    problems: list[ConfigError] = []
    if policy.policy_mode not in caps.policy_modes:
        message = f"policy_mode: {policy.policy_mode!r} needs a nemotron-content-safety guard"
        problems.append(doc.error(("policy_mode",), f"{message}; {name!r} is {protocol}"))
    guard = GUARD_PROTOCOLS[protocol](settings.guards[name])
    for profile in build_profiles(policy, packs).values():
        for rules in (profile.input, profile.output):
            if _sends_both_modes(guard, rules.guard_policy):
                message = (
                    f"guard {name!r} would send custom_policy and custom_taxonomy "
                    "together (its chat_template_kwargs set one, the tenant's policy_mode the "
                    "other); the two modes are mutually exclusive"
                )
                return [*problems, doc.error(("policy_mode",), message)]
            needs = _unsupported(rules.guard_policy.custom, rules.guard_policy.rules, caps)
            if needs:
                message = (
                    f"guard {name!r} ({protocol}) cannot be told {needs}; "
                    "use a Nemotron guard or drop them (regions add rules)"
                )
                return [*problems, doc.error(("guard",), message)]
    return problems


def _sends_both_modes(guard: GuardProtocol, policy: GuardPolicy) -> bool:
    for call in guard_calls(GuardInput("", policy=policy)):
        kwargs = guard.build_request(call).get("chat_template_kwargs") or {}
        if all(key in kwargs for key in EXCLUSIVE_KWARGS):
            return True
    return False


def _unsupported(custom: tuple[Any, ...], rules: str, caps: GuardCapabilities) -> str:
    wanted = [
        name
        for name, needed, able in (
            ("custom categories", bool(custom), caps.custom_categories),
            ("policy rules", bool(rules.strip()), caps.rules),
        )
        if needed and not able
    ]
    return " or ".join(wanted)


def _check_categories(
    doc: YamlDocument, actions: Mapping[str, str], path: tuple[str, ...], custom: set[str]
) -> list[ConfigError]:
    return [
        doc.error(
            (*path, name), f"{'.'.join(path)}: unknown category {name!r}{_hint(name, custom)}"
        )
        for name in actions
        if name not in TAXONOMY and name not in custom
    ]


def _hint(name: str, custom: set[str]) -> str:
    """A likely intended name; an unknown guard name must be declared in extra_categories."""
    close = difflib.get_close_matches(name, [*TAXONOMY, *custom], n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return " (a name the guard returns that the proxy does not know goes in extra_categories)"


def load_candidate(settings: Settings, env: dict[str, str], path: Path) -> TenantPolicy:
    """A tenant policy file outside the live set (`replay --policy`, `eval --policy`): read
    beside the policies folder, so it may `extends` a live tenant, and checked the same way."""
    folder = settings.policies_dir()
    problems = Problems()
    regions = _load_regions(folder / REGIONS_FOLDER, env, problems)
    documents = _read_all(folder.glob("*.yaml"), env, problems)
    stem = f"__candidate__{path.stem}"
    documents[stem] = read_yaml(path, env)
    loaded = problems.catching(_load_tenant, stem, documents)
    if loaded is not None:
        problems.extend(_cross_check(settings, [loaded], regions))
    if problems:
        raise InvalidConfig(problems)
    policy: TenantPolicy = loaded[0]
    return with_answer_judges(settings, policy)

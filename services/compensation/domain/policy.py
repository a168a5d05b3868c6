"""The compensation policy: loaded from TOML, validated whole, refused with every bad key named.

Layout (see ``services/compensation/policy.toml``; every amount is integer minor units of its currency)::

    version = "..."                          required, non-empty; recorded on every offer
    currencies = ["EUR", ...]                the currencies the policy prices; every money table must
                                             name exactly these (a case in another currency gets only the
                                             apology and is sent for review: amounts are never converted)
    [remedies]       <category> = ["<kind>", ...]   goodwill kinds allowed per category, preferred first;
                                             every category required; apology_note is always allowed anyway
    [alternatives]   <kind> = ["<kind>", ...]       closest kinds to offer when a requested kind is not allowed
    [goodwill]       repeat_bp_per_prior, repeat_max_priors, avoidable_bp, waiting_grace_hours,
                     waiting_bp_per_hour, waiting_max_bp, sla_breach_bp, sla_breach_max, reopen_bp,
                     reopen_max (all integers >= 0)
    [goodwill.base.<CUR>]        minor, moderate, major, critical (non-decreasing)
    [goodwill.round_up_to]       <CUR> = step (>= 1): goodwill amounts are rounded up to a multiple
    [[goodwill.value_tiers.<CUR>]]  name, from (lifetime value), bp; ascending ``from``, non-decreasing bp
    [caps]           order_share_bp: goodwill at most this share of the order value (basis points)
    [caps.per_case]  <CUR> = most goodwill per case
    [caps.floor]     <CUR> = least goodwill for a real failure (<= per_case)
    [request]        extra_bp: the small extra on a granted request, in basis points of it
    [request.extra_min]          <CUR> = least extra on a granted request
    [reimbursement.receipt_threshold]  <CUR> = above this a cost without receipt needs one before payment
    [reimbursement.caps.<CUR>]   <cost_kind> = most repaid per reported cost; every cost kind required
    [[statutory]]    id, category, text, min_severity (optional), excluded_when_unavoidable (bool),
                     bands.<CUR> = [{from = order value, amount = ...}, ...] (ascending ``from``)
    [abuse]          window_days, max_unverified_claims (the window is also the repeat guard's: another case
                     on the same reference authorised within it sends the offer for review)
    [budget]         [budget.default] <CUR> = monthly budget; [budget.team.<team>] <CUR> = per-team override
    [playbooks.<id>] explanation (optional, for staff), lines = [{kind, cost_kind (reimbursement only, then
                     required), text, amount = {<CUR> = amount > 0, ...}}, ...]: a declared incident's fixed offer
                     (Plan B); ``<id>`` is lower-case snake_case; every line prices exactly the currencies

A ``text`` is the id of a template in compensation's catalogue (``locales/``), which holds the customer's words
in every language, e.g. ``text = "offer.statutory.cancellation"``. Versions written before the catalogues
carry ``explanation = "..."`` instead: English words, kept as they are (template ``policy.words``).

Rounding rules (all integer arithmetic; no float anywhere in the money path):

1. Percentages are basis points (1/100 of a percent). ``services.common.money.scale`` applies them:
   ``amount * bp / 10000`` rounded half up to the minor unit (0.5 minor units go up).
2. The goodwill gesture is ``scale(base[severity], 10000 + sum of adjustments)``: the adjustments are
   added first and applied in ONE scaling, so there is one rounding step, not one per adjustment.
3. It is then rounded UP to a multiple of ``goodwill.round_up_to[<CUR>]`` (customers see round amounts;
   rounding up never shortchanges them).
4. Caps are applied after rounding and cut exactly (a capped amount may be unround). The order-value
   cap is ``scale(order_value, order_share_bp)`` but never below the floor, so a cheap order still gets
   the floor; the floor is validated to be at most the per-case cap, so floor and caps never conflict.
5. Reimbursements are the reported amount, cut to the per-kind cap; never rounded.
6. Statutory lines are the table's fixed amount: never rounded, scaled or capped. So are playbook lines.
7. Waiting time counts whole hours (``waited // 1 hour``), so a minute never changes the amount.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from services.common.policy_reader import PolicyReader, load_toml
from services.common.texts import CustomerText, text
from services.compensation.domain.errors import PolicyError
from services.compensation.domain.model import KNOWN_CURRENCIES, Category, CostKind, RemedyKind, Severity

# Kinds a goodwill gesture or a granted request may take; statutory and reimbursement lines have their own rules.
GOODWILL_KINDS: frozenset[RemedyKind] = frozenset(RemedyKind) - {
    RemedyKind.STATUTORY_COMPENSATION,
    RemedyKind.REIMBURSEMENT,
}


@dataclass(frozen=True)
class ValueTier:
    """Customers whose lifetime value is at least ``floor_minor`` get ``bp`` more goodwill."""

    name: str
    floor_minor: int
    bp: int


@dataclass(frozen=True)
class StatutoryBand:
    """From this order value on, the statutory amount is ``amount_minor``."""

    from_minor: int
    amount_minor: int


@dataclass(frozen=True)
class StatutoryRule:
    """A regulation's fixed compensation for a category (e.g. air passenger rights on cancellations)."""

    rule_id: str
    category: Category
    customer_text: CustomerText
    bands: Mapping[str, tuple[StatutoryBand, ...]]
    min_severity: Severity | None = None
    excluded_when_unavoidable: bool = False


@dataclass(frozen=True)
class PlaybookLine:
    """One fixed line of a playbook: its kind (and cost kind, for a reimbursement), amount per currency, why."""

    kind: RemedyKind
    amounts: Mapping[str, int]
    customer_text: CustomerText
    cost_kind: CostKind | None = None


@dataclass(frozen=True)
class Playbook:
    """A declared incident's fixed offer (Plan B): the same lines for every case of it, whatever it reported."""

    playbook_id: str
    lines: tuple[PlaybookLine, ...]
    explanation: str = ""

    def total(self, currency: str) -> int:
        """Return the sum of the playbook's lines in ``currency``, in minor units."""
        return sum(line.amounts[currency] for line in self.lines)


@dataclass(frozen=True)
class Goodwill:
    """How the goodwill gesture is sized: bases per severity and the adjustments in basis points."""

    base: Mapping[str, Mapping[Severity, int]]
    round_up_to: Mapping[str, int]
    value_tiers: Mapping[str, tuple[ValueTier, ...]]
    repeat_bp_per_prior: int
    repeat_max_priors: int
    avoidable_bp: int
    waiting_grace: timedelta
    waiting_bp_per_hour: int
    waiting_max_bp: int
    sla_breach_bp: int
    sla_breach_max: int
    reopen_bp: int
    reopen_max: int


@dataclass(frozen=True)
class Policy:
    """A validated compensation policy; build it with ``load_policy``."""

    version: str
    currencies: tuple[str, ...]
    remedies: Mapping[Category, tuple[RemedyKind, ...]]
    alternatives: Mapping[RemedyKind, tuple[RemedyKind, ...]]
    goodwill: Goodwill
    case_cap: Mapping[str, int]
    floor: Mapping[str, int]
    order_share_bp: int
    request_extra_bp: int
    request_extra_min: Mapping[str, int]
    receipt_threshold: Mapping[str, int]
    reimbursement_caps: Mapping[str, Mapping[CostKind, int]]
    statutory: tuple[StatutoryRule, ...]
    abuse_window: timedelta
    abuse_max_unverified: int
    budget_default: Mapping[str, int]
    budget_by_team: Mapping[str, Mapping[str, int]]
    playbooks: Mapping[str, Playbook]
    # The most the frontline's personal gestures may add to a case, per currency (a version without
    # [frontline] caps them at the per-case goodwill cap).
    gesture_cap: Mapping[str, int] = field(default_factory=dict)

    def budget(self, team: str, currency: str) -> int | None:
        """Return the team's monthly budget in ``currency`` (None: no budget set, nothing to exceed)."""
        return self.budget_by_team.get(team, self.budget_default).get(currency)

    def summary(self) -> str:
        """Return a short human summary: caps, floor, bases, abuse guard."""
        parts = []
        for cur in self.currencies:
            base = self.goodwill.base[cur]
            parts.append(
                f"{cur}: goodwill base {'/'.join(str(base[s]) for s in Severity)} (minor..critical), "
                f"floor {self.floor[cur]}, cap per case {self.case_cap[cur]}"
            )
        parts.append(f"goodwill at most {self.order_share_bp} bp of the order value (never below the floor)")
        parts.append(f"review after {self.abuse_max_unverified} unverified claims in {self.abuse_window.days} days")
        parts.append(f"{len(self.statutory)} statutory rule(s)")
        parts.append(f"playbooks: {', '.join(self.playbooks) or 'none'}")
        return "; ".join(parts)


_TOP = frozenset(
    {
        "version", "currencies", "remedies", "alternatives", "goodwill", "caps", "request", "reimbursement",
        "statutory", "abuse", "budget", "playbooks", "frontline",
    }
)  # fmt: skip
_GOODWILL_INTS = (
    "repeat_bp_per_prior", "repeat_max_priors", "avoidable_bp", "waiting_grace_hours", "waiting_bp_per_hour",
    "waiting_max_bp", "sla_breach_bp", "sla_breach_max", "reopen_bp", "reopen_max",
)  # fmt: skip
_CATEGORY = {c.value: c for c in Category}
_KIND = {k.value: k for k in RemedyKind}
_COST = {k.value: k for k in CostKind}
_PLAYBOOK_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_TEMPLATE_ID = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
# The law's amount is its own line and the apology is always given: a playbook prices neither.
_PLAYBOOK_KINDS = frozenset(RemedyKind) - {RemedyKind.STATUTORY_COMPENSATION, RemedyKind.APOLOGY_NOTE}


class _Reader(PolicyReader):
    """The kit's policy reader plus compensation's own values: currencies, per-currency tables, kinds."""

    def __init__(self, currencies: tuple[str, ...], templates: frozenset[str] | None) -> None:
        super().__init__()
        self.currencies = currencies
        self.templates = templates

    def customer_text(self, item: Mapping[str, Any], path: str) -> CustomerText:
        """Return the customer text of ``item``: its ``text`` template, or a legacy version's English words."""
        if "explanation" in item and "text" not in item:
            return text("policy.words", words=self.text(item, "explanation", f"{path}.explanation"))
        template_id = self.text(item, "text", f"{path}.text")
        if template_id and not _TEMPLATE_ID.match(template_id):
            self.bad(f"{path}.text", f"must be a template id like 'offer.statutory.cancellation', got {template_id!r}")
        elif template_id and self.templates is not None and template_id not in self.templates:
            self.bad(f"{path}.text", f"{template_id!r} is not a template of compensation's catalogue")
        return text(template_id)

    def per_currency(self, data: Mapping[str, Any], key: str, path: str, *, minimum: int = 0) -> dict[str, int]:
        table = self.table(data, key, path, required=True)
        return self.currency_amounts(table, path, minimum=minimum)

    def currency_amounts(self, table: Mapping[str, Any], path: str, *, minimum: int = 0) -> dict[str, int]:
        self.only(table, frozenset(self.currencies), path)
        return {cur: self.integer(table, cur, f"{path}.{cur}", None, minimum=minimum) for cur in self.currencies}

    def currency_tables(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, Mapping[str, Any]]:
        table = self.table(data, key, path, required=True)
        self.only(table, frozenset(self.currencies), path)
        return {cur: self.table(table, cur, f"{path}.{cur}", required=True) for cur in self.currencies}

    def kinds(self, value: Any, path: str, *, goodwill_only: bool = True) -> tuple[RemedyKind, ...]:
        if not isinstance(value, list) or not value:
            self.bad(path, "must be a non-empty list of remedy kinds")
            return ()
        kinds = []
        for i, name in enumerate(value):
            kind = _KIND.get(name) if isinstance(name, str) else None
            if kind is None:
                self.bad(f"{path}[{i}]", f"unknown remedy kind {name!r}")
            elif goodwill_only and kind not in GOODWILL_KINDS:
                self.bad(f"{path}[{i}]", f"{name} is not a goodwill kind (it has its own rules)")
            else:
                kinds.append(kind)
        return tuple(kinds)


def load_policy(source: str, templates: frozenset[str] | None = None) -> Policy:
    """Return the policy in TOML ``source``; raise ``PolicyError`` naming every missing, unknown or bad key.

    ``templates``, when given, are the catalogue's template ids: a ``text`` naming another is refused.
    """
    data = load_toml(source, PolicyError)
    currencies = _currencies(data)
    r = _Reader(currencies, templates)
    raw = data.get("currencies")
    if not isinstance(raw, list) or not raw:
        r.bad("currencies", "is required: a non-empty list of ISO-4217 codes")
    else:
        for i, code in enumerate(raw):
            if code not in KNOWN_CURRENCIES:
                r.bad(f"currencies[{i}]", f"unknown ISO-4217 currency {code!r}")
    r.only(data, _TOP, "")
    version = r.text(data, "version", "version")
    remedies = _remedies(r, r.table(data, "remedies", "remedies", required=True))
    alternatives = _alternatives(r, r.table(data, "alternatives", "alternatives", required=False))
    goodwill = _goodwill(r, r.table(data, "goodwill", "goodwill", required=True))
    caps = r.table(data, "caps", "caps", required=True)
    r.only(caps, frozenset({"order_share_bp", "per_case", "floor"}), "caps")
    order_share_bp = r.integer(caps, "order_share_bp", "caps.order_share_bp", None, minimum=1)
    case_cap = r.per_currency(caps, "per_case", "caps.per_case", minimum=0)
    floor = r.per_currency(caps, "floor", "caps.floor", minimum=0)
    for cur in currencies:
        if floor.get(cur, 0) > case_cap.get(cur, 0):
            r.bad(f"caps.floor.{cur}", f"must not exceed caps.per_case.{cur} ({case_cap[cur]})")
    request = r.table(data, "request", "request", required=True)
    r.only(request, frozenset({"extra_bp", "extra_min"}), "request")
    extra_bp = r.integer(request, "extra_bp", "request.extra_bp", None, minimum=0)
    extra_min = r.per_currency(request, "extra_min", "request.extra_min")
    reimbursement = r.table(data, "reimbursement", "reimbursement", required=True)
    r.only(reimbursement, frozenset({"receipt_threshold", "caps"}), "reimbursement")
    receipt = r.per_currency(reimbursement, "receipt_threshold", "reimbursement.receipt_threshold")
    cost_caps = _cost_caps(r, reimbursement)
    statutory = _statutory(r, data.get("statutory", []))
    abuse = r.table(data, "abuse", "abuse", required=True)
    r.only(abuse, frozenset({"window_days", "max_unverified_claims"}), "abuse")
    abuse_days = r.integer(abuse, "window_days", "abuse.window_days", None, minimum=1)
    abuse_max = r.integer(abuse, "max_unverified_claims", "abuse.max_unverified_claims", None, minimum=0)
    budget_default, budget_by_team = _budget(r, r.table(data, "budget", "budget", required=False))
    playbooks = _playbooks(r, r.table(data, "playbooks", "playbooks", required=False))
    frontline = r.table(data, "frontline", "frontline", required=False)
    r.only(frontline, frozenset({"gesture_cap"}), "frontline")
    gesture_cap = dict(case_cap)
    if "gesture_cap" in frontline:
        gesture_cap = r.per_currency(frontline, "gesture_cap", "frontline.gesture_cap", minimum=0)
    r.raise_if_bad(PolicyError)
    return Policy(
        version=version,
        currencies=currencies,
        remedies=MappingProxyType(remedies),
        alternatives=MappingProxyType(alternatives),
        goodwill=goodwill,
        case_cap=MappingProxyType(case_cap),
        floor=MappingProxyType(floor),
        order_share_bp=order_share_bp,
        request_extra_bp=extra_bp,
        request_extra_min=MappingProxyType(extra_min),
        receipt_threshold=MappingProxyType(receipt),
        reimbursement_caps=MappingProxyType(cost_caps),
        statutory=statutory,
        abuse_window=timedelta(days=abuse_days),
        abuse_max_unverified=abuse_max,
        budget_default=MappingProxyType(budget_default),
        budget_by_team=MappingProxyType(budget_by_team),
        playbooks=MappingProxyType(playbooks),
        gesture_cap=MappingProxyType(gesture_cap),
    )


def _currencies(data: Mapping[str, Any]) -> tuple[str, ...]:
    value = data.get("currencies")
    if not isinstance(value, list):
        return ()
    # Unknown codes are reported by _check_currencies below; keep the known ones so the tables validate.
    return tuple(c for c in value if isinstance(c, str) and c in KNOWN_CURRENCIES)


def _remedies(r: _Reader, table: Mapping[str, Any]) -> dict[Category, tuple[RemedyKind, ...]]:
    result = {}
    for name, value in table.items():
        category = _CATEGORY.get(name)
        if category is None:
            r.bad(f"remedies.{name}", "unknown category")
            continue
        result[category] = r.kinds(value, f"remedies.{name}")
        if result[category] and set(result[category]) <= {RemedyKind.APOLOGY_NOTE}:
            r.bad(f"remedies.{name}", "needs a kind besides apology_note (the gesture has to take some form)")
    if table:
        # Every category needs its kinds on purpose: a new category must not silently get none.
        for category in Category:
            if category.value not in table:
                r.bad(f"remedies.{category.value}", "is required")
    return result


def _alternatives(r: _Reader, table: Mapping[str, Any]) -> dict[RemedyKind, tuple[RemedyKind, ...]]:
    result = {}
    for name, value in table.items():
        kind = _KIND.get(name)
        if kind is None:
            r.bad(f"alternatives.{name}", "unknown remedy kind")
            continue
        result[kind] = r.kinds(value, f"alternatives.{name}")
    return result


def _goodwill(r: _Reader, table: Mapping[str, Any]) -> Goodwill:
    r.only(table, frozenset(_GOODWILL_INTS) | {"base", "round_up_to", "value_tiers"}, "goodwill")
    ints = {key: r.integer(table, key, f"goodwill.{key}", None, minimum=0) for key in _GOODWILL_INTS}
    base = {}
    for cur, levels in r.currency_tables(table, "base", "goodwill.base").items():
        path = f"goodwill.base.{cur}"
        r.only(levels, frozenset(s.value for s in Severity), path)
        amounts = {s: r.integer(levels, s.value, f"{path}.{s.value}", None, minimum=0) for s in Severity}
        # More severe never pays less: the bases must not decrease (the property tests rely on it).
        if list(amounts.values()) != sorted(amounts.values()):
            r.bad(path, "bases must not decrease from minor to critical")
        base[cur] = MappingProxyType(amounts)
    round_up = r.per_currency(table, "round_up_to", "goodwill.round_up_to", minimum=1)
    tiers_table = r.table(table, "value_tiers", "goodwill.value_tiers", required=True)
    r.only(tiers_table, frozenset(r.currencies), "goodwill.value_tiers")
    tiers = {cur: _tiers(r, tiers_table.get(cur), f"goodwill.value_tiers.{cur}") for cur in r.currencies}
    return Goodwill(
        base=MappingProxyType(base),
        round_up_to=MappingProxyType(round_up),
        value_tiers=MappingProxyType(tiers),
        repeat_bp_per_prior=ints["repeat_bp_per_prior"],
        repeat_max_priors=ints["repeat_max_priors"],
        avoidable_bp=ints["avoidable_bp"],
        waiting_grace=timedelta(hours=ints["waiting_grace_hours"]),
        waiting_bp_per_hour=ints["waiting_bp_per_hour"],
        waiting_max_bp=ints["waiting_max_bp"],
        sla_breach_bp=ints["sla_breach_bp"],
        sla_breach_max=ints["sla_breach_max"],
        reopen_bp=ints["reopen_bp"],
        reopen_max=ints["reopen_max"],
    )


def _tiers(r: _Reader, value: Any, path: str) -> tuple[ValueTier, ...]:
    if not isinstance(value, list) or not value:
        r.bad(path, "is required: a non-empty list of {name, from, bp} tiers")
        return ()
    tiers = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            r.bad(where, "must be a table")
            continue
        r.only(item, frozenset({"name", "from", "bp"}), where)
        tiers.append(
            ValueTier(
                name=r.text(item, "name", f"{where}.name"),
                floor_minor=r.integer(item, "from", f"{where}.from", None, minimum=0),
                bp=r.integer(item, "bp", f"{where}.bp", None, minimum=0),
            )
        )
    if [t.floor_minor for t in tiers] != sorted({t.floor_minor for t in tiers}):
        r.bad(path, "tiers must be in strictly ascending order of 'from'")
    if [t.bp for t in tiers] != sorted(t.bp for t in tiers):
        r.bad(path, "a higher tier must not get fewer basis points")
    return tuple(tiers)


def _cost_caps(r: _Reader, reimbursement: Mapping[str, Any]) -> dict[str, Mapping[CostKind, int]]:
    caps = {}
    for cur, table in r.currency_tables(reimbursement, "caps", "reimbursement.caps").items():
        path = f"reimbursement.caps.{cur}"
        r.only(table, frozenset(_COST), path)
        # Every cost kind needs a cap: a cost kind without one would be repaid without limit or not at all.
        caps[cur] = MappingProxyType(
            {kind: r.integer(table, name, f"{path}.{name}", None, minimum=0) for name, kind in _COST.items()}
        )
    return caps


def _statutory(r: _Reader, value: Any) -> tuple[StatutoryRule, ...]:
    if not isinstance(value, list):
        r.bad("statutory", "must be an array of tables ([[statutory]])")
        return ()
    rules = []
    seen = set()
    for i, item in enumerate(value):
        path = f"statutory[{i}]"
        if not isinstance(item, dict):
            r.bad(path, "must be a table")
            continue
        allowed = {"id", "category", "text", "explanation", "min_severity", "excluded_when_unavoidable", "bands"}
        r.only(item, frozenset(allowed), path)
        rule_id = r.text(item, "id", f"{path}.id")
        if rule_id in seen:
            r.bad(f"{path}.id", f"duplicate statutory rule id {rule_id!r}")
        seen.add(rule_id)
        category = r.member(item.get("category"), Category, f"{path}.category", Category.OTHER)
        severity = None
        if "min_severity" in item:
            severity = r.member(item["min_severity"], Severity, f"{path}.min_severity", Severity.MINOR)
        table = r.table(item, "bands", f"{path}.bands", required=True)
        r.only(table, frozenset(r.currencies), f"{path}.bands")
        # A statutory amount exists in every currency the policy prices: the law does not depend on it.
        bands = {cur: _bands(r, table.get(cur), f"{path}.bands.{cur}") for cur in r.currencies}
        rules.append(
            StatutoryRule(
                rule_id=f"statutory.{rule_id}",
                category=category,
                customer_text=r.customer_text(item, path),
                bands=MappingProxyType(bands),
                min_severity=severity,
                excluded_when_unavoidable=r.boolean(
                    item, "excluded_when_unavoidable", f"{path}.excluded_when_unavoidable", False
                ),
            )
        )
    return tuple(rules)


def _bands(r: _Reader, rows: Any, path: str) -> tuple[StatutoryBand, ...]:
    if not isinstance(rows, list) or not rows:
        r.bad(path, "must be a non-empty list of {from, amount}")
        return ()
    bands = []
    for i, row in enumerate(rows):
        where = f"{path}[{i}]"
        if not isinstance(row, dict):
            r.bad(where, "must be a table")
            continue
        r.only(row, frozenset({"from", "amount"}), where)
        bands.append(
            StatutoryBand(
                from_minor=r.integer(row, "from", f"{where}.from", None, minimum=0),
                amount_minor=r.integer(row, "amount", f"{where}.amount", None, minimum=0),
            )
        )
    if [b.from_minor for b in bands] != sorted({b.from_minor for b in bands}):
        r.bad(path, "bands must be in strictly ascending order of 'from'")
    return tuple(bands)


def _budget(r: _Reader, table: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, Mapping[str, int]]]:
    r.only(table, frozenset({"default", "team"}), "budget")
    default = _optional_amounts(r, r.table(table, "default", "budget.default", required=False), "budget.default")
    teams = {}
    for team, amounts in r.table(table, "team", "budget.team", required=False).items():
        path = f"budget.team.{team}"
        if not isinstance(amounts, dict):
            r.bad(path, "must be a table of <CUR> = amount")
            continue
        teams[team] = MappingProxyType(_optional_amounts(r, amounts, path))
    return default, teams


def _optional_amounts(r: _Reader, table: Mapping[str, Any], path: str) -> dict[str, int]:
    # Budgets may name a subset of the currencies: no budget in a currency means nothing to exceed.
    r.only(table, frozenset(r.currencies), path)
    return {cur: r.integer(table, cur, f"{path}.{cur}", None, minimum=0) for cur in r.currencies if cur in table}


def _playbooks(r: _Reader, table: Mapping[str, Any]) -> dict[str, Playbook]:
    result = {}
    for playbook_id, item in table.items():
        path = f"playbooks.{playbook_id}"
        # The id is part of every line's rule id and of the declaration escalation receives: keep it plain.
        if not _PLAYBOOK_ID.match(playbook_id):
            r.bad(path, "playbook ids are lower-case snake_case (a letter, then letters, digits or _)")
        if not isinstance(item, dict):
            r.bad(path, "must be a table")
            continue
        r.only(item, frozenset({"explanation", "lines"}), path)
        explanation = r.text(item, "explanation", f"{path}.explanation") if "explanation" in item else ""
        lines = item.get("lines")
        if not isinstance(lines, list) or not lines:
            r.bad(f"{path}.lines", "is required: a non-empty list of {kind, text, amount} lines")
            lines = []
        parsed = tuple(_playbook_line(r, line, f"{path}.lines[{i}]") for i, line in enumerate(lines))
        result[playbook_id] = Playbook(playbook_id, tuple(line for line in parsed if line is not None), explanation)
    return result


def _playbook_line(r: _Reader, item: Any, path: str) -> PlaybookLine | None:
    if not isinstance(item, dict):
        r.bad(path, "must be a table")
        return None
    r.only(item, frozenset({"kind", "cost_kind", "text", "explanation", "amount"}), path)
    kind = r.member(item.get("kind"), RemedyKind, f"{path}.kind", RemedyKind.VOUCHER)
    if kind not in _PLAYBOOK_KINDS:
        r.bad(
            f"{path}.kind", f"{kind.value} is not a playbook kind (the law's amount and the apology are always added)"
        )
    cost_kind = None
    if kind is RemedyKind.REIMBURSEMENT:
        # A reimbursement is deducted per cost kind on a re-quote: it must say which cost it repays.
        cost_kind = r.member(item.get("cost_kind"), CostKind, f"{path}.cost_kind", CostKind.OTHER)
    elif "cost_kind" in item:
        r.bad(f"{path}.cost_kind", "only a reimbursement has a cost kind")
    amount = r.table(item, "amount", f"{path}.amount", required=True)
    amounts = r.currency_amounts(amount, f"{path}.amount", minimum=1) if amount else {}
    return PlaybookLine(
        kind=kind,
        amounts=MappingProxyType(amounts),
        customer_text=r.customer_text(item, path),
        cost_kind=cost_kind,
    )

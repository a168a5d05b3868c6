"""Customer texts: what a customer reads, as a catalogue template and its parameters, and the customer's language.

Domain code says *what* to tell the customer (``text("offer.reimbursement", cost=..., amount=...)``) and never
writes the words: the catalogues hold them in every supported language (``services.common.catalogue`` renders
them). A parameter is a string, a count (an ``int``, which also picks the plural form), an amount (``Money``),
a time (``datetime``) or another template (a ``CustomerText``: words such as a remedy kind's name).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from services.common.money import MINOR_DIGITS, Money

# The languages of the markets the product serves; every catalogue has every one of them.
SUPPORTED_LOCALES: tuple[str, ...] = ("en", "it", "lt", "pl")
# What a case speaks when neither the report nor the market says.
FALLBACK_LOCALE = "en"

_TAG = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class CustomerText:
    """A message for the customer: its template, its parameters and, once rendered, its locale and text."""

    template_id: str
    params: tuple[tuple[str, object], ...] = ()
    locale: str = ""
    text: str = ""

    @property
    def rendered(self) -> bool:
        return bool(self.locale)

    def param(self, name: str) -> object:
        """Return the parameter ``name``; raises KeyError when the text has none of that name."""
        return dict(self.params)[name]

    def wire_params(self) -> dict[str, str]:
        """Return the parameters as the contract carries them: not localised (see CustomerText in common.proto)."""
        return {name: wire_value(value) for name, value in self.params}


def text(template_id: str, **params: object) -> CustomerText:
    """Return the (not yet rendered) text of ``template_id`` with ``params``, in the order given."""
    return CustomerText(template_id, tuple(params.items()))


def wire_value(value: object) -> str:
    """Return a parameter as the contract carries it: "12.50 PLN", RFC 3339, digits, or a template's id."""
    if isinstance(value, CustomerText):
        return value.template_id
    if isinstance(value, Money):
        digits = MINOR_DIGITS.get(value.currency, 2)
        return f"{Decimal(value.amount_minor).scaleb(-digits):f} {value.currency}"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        raise TypeError(f"a text parameter cannot be a bool, got {value!r}")
    return str(value)


def parse_locale(value: str) -> str:
    """Return the supported language ``value`` names ("pl-PL", "pl_PL" and "PL" are "pl"), "" for "".

    Raises ValueError, naming the value and the supported locales, for anything else.
    """
    if not value:
        return ""
    match = _TAG.match(value)
    language = match.group(1).lower() if match else ""
    if language not in SUPPORTED_LOCALES:
        raise ValueError(
            f"{value!r} is not a supported locale: use one of {', '.join(SUPPORTED_LOCALES)} (a region may follow)"
        )
    return language


@dataclass(frozen=True)
class LocalePolicy:
    """A market's language: by the customer's time zone, else by the order's currency, else the default."""

    default: str = FALLBACK_LOCALE
    by_timezone: Mapping[str, str] = field(default_factory=dict)
    by_currency: Mapping[str, str] = field(default_factory=dict)


def choose_locale(requested: str, *, timezone: str = "", currency: str = "", policy: LocalePolicy) -> str:
    """Return the locale a case speaks: the one the customer asked for, else their market's, else the default.

    ``requested`` must be parsed already (``parse_locale``); the policy's values are validated when it loads.
    """
    if requested:
        return requested
    return policy.by_timezone.get(timezone) or policy.by_currency.get(currency) or policy.default

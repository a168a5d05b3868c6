"""Exchange rates: limits are kept in the policy's base currency; an offer in another currency is checked
against them through the policy's versioned rates table.

Exact arithmetic only (fractions of integers, never a float). Rounding always favours the limit: an amount
counts against a limit at no less than its value (rounded up into the base currency), and a limit converted
into the offer's currency is rounded down, so a check done in either currency can never let more through
than the limit in the base currency allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction

from services.common.money import MINOR_DIGITS, Money
from services.escalation.domain.model import Limits, Usage

_DECIMAL = re.compile(r"^\d+(\.\d+)?$")


@dataclass(frozen=True)
class Rate:
    """One unit of ``currency`` is ``value`` units of ``base`` (major units), under ``version`` of the table."""

    currency: str
    base: str
    value: Fraction
    text: str
    version: str

    @classmethod
    def identity(cls, base: str, version: str) -> Rate:
        """The rate of the base currency to itself."""
        return cls(currency=base, base=base, value=Fraction(1), text="1", version=version)

    @property
    def _minor_factor(self) -> Fraction:
        # Minor units of the currency to minor units of the base (JPY has none, EUR two).
        return self.value * Fraction(10 ** MINOR_DIGITS[self.base], 10 ** MINOR_DIGITS[self.currency])

    def to_base(self, amount_minor: int) -> int:
        """Return ``amount_minor`` of the currency in base minor units, rounded up (it counts in full)."""
        return _ceil(amount_minor * self._minor_factor)

    def from_base(self, base_minor: int) -> int:
        """Return a base-currency limit in minor units of the currency, rounded down (never more room)."""
        converted = base_minor / self._minor_factor
        return converted.numerator // converted.denominator

    def money_to_base(self, amount: Money) -> Money:
        """Return ``amount`` (in the rate's currency) in the base currency, rounded up."""
        return Money(self.to_base(amount.amount_minor), self.base)


def parse_rate(text: object) -> Fraction | None:
    """Return a positive decimal string ("1.17") as an exact fraction; None when it is not one."""
    if not isinstance(text, str) or not _DECIMAL.match(text.strip()):
        return None
    value = Fraction(text.strip())
    return value if value > 0 else None


def limits_in(limits: Limits, rate: Rate) -> Limits:
    """Return base-currency ``limits`` as they stand in the rate's currency (rounded down)."""
    if rate.currency == limits.currency:
        return limits
    return replace(
        limits,
        currency=rate.currency,
        per_case=rate.from_base(limits.per_case),
        per_day=rate.from_base(limits.per_day),
        per_month=rate.from_base(limits.per_month),
        remedy_caps={kind: rate.from_base(cap) for kind, cap in limits.remedy_caps.items()},
    )


def usage_in(usage: Usage, rate: Rate) -> Usage:
    """Return base-currency period usage in the rate's currency, rounded up (what was used counts in full)."""
    if rate.value == 1 and rate.currency == rate.base:
        return usage

    return Usage(today=_ceil(usage.today / rate._minor_factor), this_month=_ceil(usage.this_month / rate._minor_factor))


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)

"""Money as every service holds it: integer minor units of an ISO-4217 currency, never a float.

A value type shared by the contracts of all four services (design rule 5), not a domain rule: what an
amount *means* (a cap, a limit, a cost) stays in each service's own domain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# ISO-4217 codes this system accepts, with their minor-unit digits. A closed list on purpose: a typo
# ("EUE") must be refused, not stored.
MINOR_DIGITS: dict[str, int] = {
    "EUR": 2, "USD": 2, "GBP": 2, "PLN": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "CZK": 2, "HUF": 2,
    "RON": 2, "BGN": 2, "ISK": 0, "JPY": 0, "CNY": 2, "HKD": 2, "SGD": 2, "KRW": 0, "INR": 2, "AUD": 2,
    "NZD": 2, "CAD": 2, "MXN": 2, "BRL": 2, "ZAR": 2, "TRY": 2, "AED": 2, "ILS": 2, "UAH": 2, "RSD": 2,
}  # fmt: skip
KNOWN_CURRENCIES: frozenset[str] = frozenset(MINOR_DIGITS)


@dataclass(frozen=True, order=True)
class Money:
    """An amount in integer minor units of an ISO-4217 currency."""

    amount_minor: int
    currency: str

    def __add__(self, other: Money) -> Money:
        _same_currency(self, other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        _same_currency(self, other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Return no money in ``currency``."""
        return cls(0, currency)


def _same_currency(a: Money, b: Money) -> None:
    if a.currency != b.currency:
        # Amounts are never converted: adding EUR to PLN is a bug, not a rounding question.
        raise ValueError(f"cannot combine {a.currency} with {b.currency}")


def totals(amounts: Iterable[Money]) -> dict[str, int]:
    """Return the sum of ``amounts`` per currency, in minor units."""
    result: dict[str, int] = {}
    for money in amounts:
        result[money.currency] = result.get(money.currency, 0) + money.amount_minor
    return result


def scale(amount_minor: int, basis_points: int) -> int:
    """Return ``amount_minor * basis_points / 10000`` rounded half up, in integers only (no float)."""
    # Half up on the absolute value keeps the rule symmetric and easy to state: 0.5 minor units go up.
    numerator = abs(amount_minor) * basis_points
    rounded = (numerator + 5_000) // 10_000
    return rounded if amount_minor >= 0 else -rounded

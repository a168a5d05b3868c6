"""Who may do what with follow-ups: the staff roles and the owner rule for cancelling."""

from __future__ import annotations

from services.followup.domain.model import Followup

STAFF = ("agent", "senior_agent", "team_lead", "manager", "director")
# Frontline roles act on their own customers; leads and managers on their teams' (which the token does not say).
OWNER_ONLY = frozenset({"agent", "senior_agent"})


def may_cancel(*, role: str, employee_id: str, followup: Followup) -> bool:
    """True when the caller may cancel ``followup``: its case owner, or a team lead or above."""
    if role in OWNER_ONLY:
        return bool(employee_id) and followup.owner_employee_id == employee_id
    return role in STAFF

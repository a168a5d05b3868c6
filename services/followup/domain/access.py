"""Who may do what with follow-ups: the staff roles and the owner-or-team rule for cancelling."""

from __future__ import annotations

from services.followup.domain.model import Followup

STAFF = ("agent", "senior_agent", "team_lead", "manager", "director")
# Frontline roles act on their own cases; leads and above on every case of their own team (as in escalation).
SUPERVISORS = frozenset({"team_lead", "manager", "director"})


def may_cancel(*, role: str, employee_id: str, team: str, followup: Followup, case_team: str) -> bool:
    """True when the caller may cancel ``followup``: the case owner, or a team lead or above of the case's team."""
    if role not in STAFF:
        return False
    if employee_id and followup.owner_employee_id == employee_id:
        return True
    return role in SUPERVISORS and bool(team) and team == case_team

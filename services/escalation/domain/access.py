"""Resource-level authorisation: who may act on which case (the per-method role table is the first gate)."""

from __future__ import annotations

from services.escalation.domain.errors import Forbidden
from services.escalation.domain.model import Actor, Case, CaseState

# Roles that act on every case of their own team (not only on the cases they own).
SUPERVISORS = frozenset({"team_lead", "manager", "director"})


def may_act(case: Case, actor: Actor) -> bool:
    """True when ``actor`` owns the case or supervises its team."""
    if actor.employee_id and actor.employee_id == case.owner_employee_id:
        return True
    return actor.role in SUPERVISORS and actor.team == case.team


def require_act(case: Case, actor: Actor) -> None:
    """Return when ``actor`` may act on the case; raises Forbidden otherwise."""
    if not may_act(case, actor):
        raise Forbidden(f"case {case.case_id} is not the caller's: agents act on own cases, leads on their team's")


def require_owner(case: Case, actor: Actor) -> None:
    """Return when ``actor`` owns the case; raises Forbidden otherwise (the owner's authority is theirs alone)."""
    if actor.employee_id != case.owner_employee_id:
        raise Forbidden(f"only the owner of case {case.case_id} may use their authority on it")


def may_view(case: Case, actor: Actor, *, routed_to_actor: bool = False, reported_it: bool = False) -> bool:
    """True when ``actor`` may act on the case, it waits in their team's queue, they decide on it, or their
    own report of the failure merged into it (the reporter is in the loop; only the owner acts)."""
    queued_here = case.state is CaseState.QUEUED and actor.team == case.team
    return may_act(case, actor) or queued_here or routed_to_actor or reported_it


def require_claim(case: Case, actor: Actor) -> None:
    """Return when ``actor`` may claim the case (a queued case of their own team); raises Forbidden otherwise."""
    if actor.team != case.team:
        raise Forbidden(f"case {case.case_id} waits in team {case.team!r}'s queue, not the caller's")

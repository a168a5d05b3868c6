"""What a satisfaction answer means: validation, whether it reopens the case, and its dedupe identity."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from services.followup.domain.errors import FieldViolation, InvalidFeedback
from services.followup.domain.model import Feedback

MAX_SCORE = 10
MAX_COMMENT = 4000
MAX_ID = 128


def validate_feedback(feedback: Feedback, *, satisfied_required: bool) -> Feedback:
    """Return ``feedback``; raises InvalidFeedback naming every bad field."""
    violations = list(_violations(feedback, satisfied_required=satisfied_required))
    if violations:
        raise InvalidFeedback.of(*violations)
    return feedback


def _violations(feedback: Feedback, *, satisfied_required: bool) -> Iterator[FieldViolation]:
    if not feedback.case_id:
        yield FieldViolation("case_id", "is required")
    if not feedback.feedback_id:
        yield FieldViolation("feedback_id", "is required")
    for name in ("case_id", "feedback_id", "followup_id", "customer_id"):
        if len(getattr(feedback, name)) > MAX_ID:
            yield FieldViolation(name, f"must be at most {MAX_ID} characters")
    if feedback.score is not None and not 0 <= feedback.score <= MAX_SCORE:
        yield FieldViolation("score", f"must be 0 to {MAX_SCORE}, got {feedback.score}")
    if satisfied_required and feedback.satisfied is None:
        yield FieldViolation("satisfied", "is required: is the customer satisfied with the solution?")
    if len(feedback.comment) > MAX_COMMENT:
        yield FieldViolation("comment", f"must be at most {MAX_COMMENT} characters")


def with_verdict(feedback: Feedback, *, negative_below: int) -> Feedback:
    """Return ``feedback`` with the verdict its score gives when it states none (a stated verdict wins).

    Survey systems often send only a score; the policy's threshold decides: below it, not satisfied.
    """
    if feedback.satisfied is not None or feedback.score is None:
        return feedback
    return replace(feedback, satisfied=feedback.score >= negative_below)


def asks_reopen(feedback: Feedback) -> bool:
    """True when the customer said they are not satisfied (an unset answer is never read as "no")."""
    return feedback.satisfied is False


def failure_event_id(feedback: Feedback) -> str:
    """Return the FailureReported source_event_id for this answer: the same answer always gives the same id."""
    return f"feedback:{feedback.source.value}:{feedback.feedback_id}"


def reopen_reason(feedback: Feedback) -> str:
    """Return the reopen request's reason, for the owner."""
    score = f" (score {feedback.score}/{MAX_SCORE})" if feedback.score is not None else ""
    return f"customer not satisfied with the solution{score}"

"""Compensation's domain events (past tense): what the service tells the rest of the system."""

from __future__ import annotations

from dataclasses import dataclass

from services.compensation.domain.model import Offer


@dataclass(frozen=True)
class OfferProposed:
    """A new offer version for a case; it supersedes ``offer.supersedes_offer_id`` when that is set."""

    offer: Offer

"""Compensation's customer texts: the catalogue of offer explanations (``services/compensation/locales``)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from services.common.catalogue import Catalogue
from services.common.texts import FALLBACK_LOCALE
from services.compensation.domain.model import LineItem, Offer

LOCALES = Path(__file__).resolve().parents[1].joinpath("locales")


@functools.cache
def catalogue() -> Catalogue:
    """Return the catalogue, read and checked once per process; raises CatalogueError when it is incomplete."""
    return Catalogue.load(LOCALES, "compensation")


def localise(offer: Offer, locale: str, texts: Catalogue | None = None) -> Offer:
    """Return ``offer`` with every line's customer text rendered in ``locale`` (empty: the fallback)."""
    locale = locale or FALLBACK_LOCALE
    return replace(
        offer,
        locale=locale,
        line_items=localise_lines(offer.line_items, locale, texts),
        granted_before=localise_lines(offer.granted_before, locale, texts),
    )


def localise_lines(lines: Iterable[LineItem], locale: str, texts: Catalogue | None = None) -> tuple[LineItem, ...]:
    """Return ``lines`` with their customer texts rendered in ``locale`` (empty: the fallback)."""
    texts = texts or catalogue()
    return tuple(replace(line, customer_text=texts.render(line.customer_text, locale)) for line in lines)

"""Followup's customer texts: the catalogue of check-ins and notices (``services/followup/locales``)."""

from __future__ import annotations

import functools
from pathlib import Path

from services.common.catalogue import Catalogue

LOCALES = Path(__file__).resolve().parents[1].joinpath("locales")


@functools.cache
def catalogue() -> Catalogue:
    """Return the catalogue, read and checked once per process; raises CatalogueError when it is incomplete."""
    return Catalogue.load(LOCALES, "followup")

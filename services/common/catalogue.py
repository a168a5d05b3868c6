"""Catalogues of customer texts: gettext ``.po`` files per language, rendered with Babel.

A service keeps its customer texts in ``<service>/locales/<locale>/LC_MESSAGES/<domain>.po``, one file per
supported locale. The message id is the template id (``offer.reimbursement``); the English file holds the
English words like every other language. A text with a count has a plural (``msgid_plural`` is the template
id plus ``.plural``), chosen by the language's own rule (Polish and Lithuanian have three forms).

Placeholders are Python's ``{name}``. Money is formatted for the locale ("12,50 zł", "12,50 €", "€12.50"),
times as a day, month and clock time in the locale's words, counts with the locale's digits.

Loading checks the catalogue whole and refuses it with every problem named: a template missing or empty in
a language, a fuzzy entry, a placeholder that differs from English. A service does not start on a bad
catalogue, so no customer ever receives a template id instead of words.
"""

from __future__ import annotations

import gettext
import io
import string
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from babel.dates import format_skeleton
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

from services.common.money import MINOR_DIGITS, Money
from services.common.texts import FALLBACK_LOCALE, SUPPORTED_LOCALES, CustomerText

PLURAL_SUFFIX = ".plural"


class CatalogueError(ValueError):
    """A catalogue that cannot be used: every problem is listed."""


@dataclass(frozen=True)
class _Template:
    plural: bool
    placeholders: frozenset[str]


def placeholders(message: str) -> frozenset[str]:
    """Return the ``{name}`` placeholders of ``message``."""
    return frozenset(name for _, name, _, _ in string.Formatter().parse(message) if name)


def _forms(string_or_forms) -> tuple[str, ...]:
    return tuple(string_or_forms) if isinstance(string_or_forms, (tuple, list)) else (string_or_forms,)


def _template_id(message) -> str:
    return str(message.id[0] if message.pluralizable else message.id)


def _read(path: Path, locale: str) -> Catalog:
    with path.open("rb") as f:
        return read_po(f, locale=locale, abort_invalid=True)


def _compile(catalog: Catalog) -> gettext.GNUTranslations:
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


class Catalogue:
    """One service's customer texts in every supported locale; build it with ``Catalogue.load``."""

    def __init__(self, domain: str, templates: dict[str, _Template], translations: dict[str, gettext.GNUTranslations]):
        self.domain = domain
        self._templates = templates
        self._translations = translations
        # Rendered texts by what decides their words: the same line in the same language is rendered once.
        self._rendered: dict[tuple, CustomerText] = {}

    @classmethod
    def load(cls, directory: Path, domain: str) -> Catalogue:
        """Read and check ``directory/<locale>/LC_MESSAGES/<domain>.po`` for every supported locale."""
        problems: list[str] = []
        catalogs: dict[str, Catalog] = {}
        for locale in SUPPORTED_LOCALES:
            path = directory / locale / "LC_MESSAGES" / f"{domain}.po"
            if not path.is_file():
                problems.append(f"{locale}: {path} is missing")
                continue
            catalogs[locale] = _read(path, locale)
        if FALLBACK_LOCALE not in catalogs:
            raise CatalogueError("; ".join(problems))
        templates = {
            _template_id(m): _Template(
                plural=m.pluralizable, placeholders=frozenset().union(*(placeholders(f) for f in _forms(m.string)))
            )
            for m in catalogs[FALLBACK_LOCALE]
            if m.id
        }
        for locale, catalog in catalogs.items():
            problems.extend(f"{locale}: {p}" for p in _check(catalog, templates))
        if problems:
            raise CatalogueError(f"catalogue {domain!r} in {directory}: " + "; ".join(problems))
        return cls(domain, templates, {locale: _compile(c) for locale, c in catalogs.items()})

    def template_ids(self) -> frozenset[str]:
        return frozenset(self._templates)

    def render(self, customer_text: CustomerText, locale: str) -> CustomerText:
        """Return ``customer_text`` rendered in ``locale`` (a supported one, "" for the fallback); raises KeyError
        for an unknown template.

        Rendering (Babel's number, currency and date formats) was half the cost of computing an offer, and the
        same lines recur (a disruption's cases, the usual amounts), so renderings are kept, a bounded number.
        """
        locale = locale or FALLBACK_LOCALE
        try:
            key = (locale, _memo_key(customer_text))
            known = self._rendered.get(key)
        except TypeError:  # a parameter that cannot be a key: rendered each time
            return self._render(customer_text, locale)
        if known is None:
            if len(self._rendered) >= 4096:
                self._rendered.clear()
            known = self._rendered[key] = self._render(customer_text, locale)
        return known

    def _render(self, customer_text: CustomerText, locale: str) -> CustomerText:
        template = self._templates.get(customer_text.template_id)
        if template is None:
            raise KeyError(f"no template {customer_text.template_id!r} in catalogue {self.domain!r}")
        params = dict(customer_text.params)
        missing = template.placeholders - params.keys()
        if missing:
            raise KeyError(f"template {customer_text.template_id!r} needs {', '.join(sorted(missing))}")
        translations = self._translations[locale]
        if template.plural:
            count = params.get("count")
            if not isinstance(count, int):
                raise KeyError(f"template {customer_text.template_id!r} needs an int count, got {count!r}")
            words = translations.ngettext(customer_text.template_id, customer_text.template_id + PLURAL_SUFFIX, count)
        else:
            words = translations.gettext(customer_text.template_id)
        used = template.placeholders | {"count"}
        formatted = {name: self._format(value, locale) for name, value in params.items() if name in used}
        # Rendered, the parameters take their contract form: what the wire carries and the store keeps.
        wire_params = tuple(sorted(customer_text.wire_params().items()))
        return replace(customer_text, params=wire_params, locale=locale, text=words.format(**formatted))

    def _format(self, value: object, locale: str) -> str:
        if isinstance(value, CustomerText):
            return self.render(value, locale).text
        if isinstance(value, Money):
            digits = MINOR_DIGITS.get(value.currency, 2)
            return format_currency(Decimal(value.amount_minor).scaleb(-digits), value.currency, locale=locale)
        if isinstance(value, datetime):
            # The day and month in the locale's words, then its clock time ("3 grudnia 15:30").
            day = format_skeleton("MMMMd", value, tzinfo=value.tzinfo, locale=locale)
            return f"{day} {format_skeleton('Hm', value, tzinfo=value.tzinfo, locale=locale)}"
        if isinstance(value, int) and not isinstance(value, bool):
            return format_decimal(value, locale=locale)
        return str(value)


def _memo_key(value: object) -> object:
    """Return what decides how ``value`` renders: equal keys render the same words.

    Not the value itself: equal values may render differently (``1 == True``; two aware datetimes of one
    instant in different zones show different clock times), so the key holds the type and, for a moment, its
    wall-clock time and zone.
    """
    if isinstance(value, CustomerText):
        return (CustomerText, value.template_id, tuple((name, _memo_key(v)) for name, v in value.params))
    if isinstance(value, datetime):
        return (datetime, value.replace(tzinfo=None), str(value.tzinfo), value.utcoffset())
    return (type(value), value)


def _check(catalog: Catalog, templates: dict[str, _Template]) -> list[str]:
    """Return what is wrong with one language's catalogue measured against the English templates."""
    problems = []
    seen = set()
    for message in catalog:
        if not message.id:
            continue
        template_id = _template_id(message)
        seen.add(template_id)
        expected = templates.get(template_id)
        if expected is None:
            problems.append(f"{template_id} is not an English template")
            continue
        if message.fuzzy:
            problems.append(f"{template_id} is marked fuzzy")
        if message.pluralizable != expected.plural:
            problems.append(f"{template_id} must {'' if expected.plural else 'not '}have plural forms")
            continue
        if expected.plural and message.id[1] != template_id + PLURAL_SUFFIX:
            problems.append(f"{template_id}: msgid_plural must be {template_id + PLURAL_SUFFIX!r}")
        forms = _forms(message.string)
        if expected.plural and len(forms) != catalog.num_plurals:
            problems.append(f"{template_id} has {len(forms)} plural forms, the language has {catalog.num_plurals}")
        for form in forms:
            if not form.strip():
                problems.append(f"{template_id} has no translation")
            elif placeholders(form) - {"count"} != expected.placeholders - {"count"}:
                # A plural form may leave the count out ("A day on" for one).
                got, want = sorted(placeholders(form)), sorted(expected.placeholders)
                problems.append(f"{template_id} has placeholders {got}, English has {want}")
    problems.extend(f"{t} is missing" for t in sorted(templates.keys() - seen))
    return problems

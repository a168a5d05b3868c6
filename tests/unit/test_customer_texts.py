"""Customer texts: the catalogues are complete in every language, locales are chosen and money and days read right."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.common.catalogue import Catalogue, CatalogueError
from services.common.money import Money
from services.common.texts import SUPPORTED_LOCALES, LocalePolicy, choose_locale, parse_locale, text
from services.common.vocabulary import CostKind, FollowupKind, ProgressStage, RemedyKind
from services.compensation.adapters import texts as compensation_texts
from services.followup.adapters import texts as followup_texts

CATALOGUES = {"compensation": compensation_texts, "followup": followup_texts}


# Parameters of the right types for any template of the shipped catalogues (a template ignores the others).
SAMPLE: dict[str, object] = {
    "count": 3,
    "amount": Money(1250, "PLN"),
    "cost": text("cost_kind.taxi"),
    "asked": text("remedy_kind.refund"),
    "offered": text("remedy_kind.voucher"),
    "action": "We now check every parcel twice.",
    "words": "Policy words.",
    "gesture": "Kwiaty",
    "by": datetime(2026, 12, 3, 15, 30, tzinfo=ZoneInfo("Europe/Warsaw")),
}


@pytest.mark.parametrize("name", sorted(CATALOGUES))
def test_every_template_renders_in_every_language_without_placeholders_or_internal_words(name):
    catalogue = CATALOGUES[name].catalogue()
    assert catalogue.template_ids(), name
    for template_id in sorted(catalogue.template_ids()):
        for locale in SUPPORTED_LOCALES:
            rendered = catalogue.render(text(template_id, **SAMPLE), locale)
            assert rendered.text and rendered.locale == locale
            # No template id, snake_case name or placeholder reaches a customer.
            assert "{" not in rendered.text and "_" not in rendered.text, (template_id, locale, rendered.text)


def test_every_kind_the_code_names_has_its_words():
    offers = compensation_texts.catalogue().template_ids()
    assert {f"remedy_kind.{k.value}" for k in RemedyKind} <= offers
    assert {f"cost_kind.{k.value}" for k in CostKind} <= offers
    said = {f"followup.{k.value}" for k in FollowupKind if k is not FollowupKind.PROGRESS_UPDATE}
    said |= {f"followup.progress_update.{stage.value}" for stage in ProgressStage}  # a progress update per stage
    assert said <= followup_texts.catalogue().template_ids()


def test_money_and_days_are_written_the_way_each_language_writes_them():
    offers = compensation_texts.catalogue()
    taxi = text("offer.reimbursement", cost=text("cost_kind.taxi"), amount=Money(1250, "PLN"))
    polish = offers.render(taxi, "pl").text
    assert polish == "Zwracamy koszt, który ponieśli Państwo przez nasz błąd: taksówka, 12,50\xa0zł."
    in_euro = text("offer.reimbursement", cost=text("cost_kind.taxi"), amount=Money(1250, "EUR"))
    assert offers.render(in_euro, "it").text.endswith("taxi, 12,50\xa0€.")
    assert offers.render(in_euro, "lt").text.endswith("taksi, 12,50\xa0€.")
    assert offers.render(in_euro, "en").text.endswith("taxi, €12.50.")
    check_in = followup_texts.catalogue()
    days = {n: check_in.render(text("followup.check_in", count=n), "pl").text.split(":")[0] for n in (1, 3, 5, 22)}
    assert days == {1: "Minął 1 dzień", 3: "Minęły 3 dni", 5: "Minęło 5 dni", 22: "Minęły 22 dni"}
    lt = {n: check_in.render(text("followup.check_in", count=n), "lt").text.split(":")[0] for n in (1, 3, 10, 21)}
    assert lt == {1: "Praėjus 1 dienai", 3: "Praėjus 3 dienoms", 10: "Praėjus 10 dienų", 21: "Praėjus 21 dienai"}
    assert check_in.render(text("followup.check_in", count=1), "en").text.startswith("1 day on")


def test_the_rendered_text_carries_its_template_and_parameters_in_contract_form():
    rendered = compensation_texts.catalogue().render(
        text("offer.reimbursement", cost=text("cost_kind.hotel"), amount=Money(12000, "EUR")), "it"
    )
    assert rendered.template_id == "offer.reimbursement"
    assert dict(rendered.params) == {"amount": "120.00 EUR", "cost": "cost_kind.hotel"}
    assert rendered.wire_params() == {"amount": "120.00 EUR", "cost": "cost_kind.hotel"}


def test_times_are_written_in_the_locales_words(folder):
    catalogue = Catalogue.load(write_catalogue(folder, {"by": "by {at}"}), "probe")
    at = datetime(2026, 12, 3, 15, 30, tzinfo=UTC)
    assert catalogue.render(text("by", at=at), "pl").text == "by 3 grudnia 15:30"
    assert catalogue.render(text("by", at=at), "en").text == "by December 3 15:30"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", ""), ("pl", "pl"), ("pl-PL", "pl"), ("PL_pl", "pl"), ("it-IT", "it"), ("lt", "lt"), ("en-GB", "en")],
)
def test_a_locale_is_its_language(value, expected):
    assert parse_locale(value) == expected


@pytest.mark.parametrize("value", ["de", "de-DE", "polish", "p", "pl--PL", " pl", "zz-ZZ"])
def test_any_other_locale_is_refused_naming_the_value_and_the_choices(value):
    with pytest.raises(ValueError, match=rf"{value!r} is not a supported locale: use one of en, it, lt, pl"):
        parse_locale(value)


def test_the_locale_is_the_customers_then_the_markets_then_the_default():
    policy = LocalePolicy(default="en", by_timezone={"Europe/Warsaw": "pl"}, by_currency={"PLN": "pl", "EUR": "it"})
    assert choose_locale("lt", timezone="Europe/Warsaw", currency="PLN", policy=policy) == "lt"
    assert choose_locale("", timezone="Europe/Warsaw", currency="EUR", policy=policy) == "pl"
    assert choose_locale("", timezone="America/New_York", currency="EUR", policy=policy) == "it"
    assert choose_locale("", timezone="", currency="GBP", policy=policy) == "en"


# ---------------------------------------------------------------------------------- a bad catalogue is refused


def write_catalogue(root: Path, english: dict[str, str], **others: dict[str, str]) -> Path:
    """Write a catalogue "probe" under ``root``: English as given, other languages as given or a copy of it."""
    shutil.rmtree(root, ignore_errors=True)
    for locale in SUPPORTED_LOCALES:
        entries = others.get(locale, english)
        folder = root / locale / "LC_MESSAGES"
        folder.mkdir(parents=True)
        body = "".join(f'msgid "{k}"\nmsgstr "{v}"\n\n' for k, v in entries.items())
        header = f'msgid ""\nmsgstr ""\n"Language: {locale}\\n"\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
        (folder / "probe.po").write_text(header + body)
    return root


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "locales"


def test_a_missing_translation_an_empty_one_and_a_placeholder_that_differs_are_all_named(folder):
    english = {"a": "Hello {name}.", "b": "Bye.", "c": "Thanks."}
    write_catalogue(folder, english, pl={"a": "Cześć {imie}.", "b": ""}, it={**english, "d": "Extra."})
    with pytest.raises(CatalogueError) as caught:
        Catalogue.load(folder, "probe")
    message = str(caught.value)
    assert "pl: a has placeholders ['imie'], English has ['name']" in message
    assert "pl: b has no translation" in message
    assert "pl: c is missing" in message
    assert "it: d is not an English template" in message


def test_a_language_without_its_file_is_refused(folder):
    write_catalogue(folder, {"a": "Hello."})
    (folder / "lt" / "LC_MESSAGES" / "probe.po").unlink()
    with pytest.raises(CatalogueError, match=r"lt: .*probe.po is missing"):
        Catalogue.load(folder, "probe")


def test_a_template_needs_its_parameters(folder):
    catalogue = Catalogue.load(write_catalogue(folder, {"a": "Hello {name}."}), "probe")
    with pytest.raises(KeyError, match="template 'a' needs name"):
        catalogue.render(text("a"), "pl")
    with pytest.raises(KeyError, match="no template 'zzz'"):
        catalogue.render(text("zzz"), "pl")


def test_a_progress_update_says_by_when_in_each_language_and_its_local_time():
    updates = followup_texts.catalogue()
    by = datetime(2026, 12, 3, 14, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Warsaw"))
    waiting = text("followup.progress_update.awaiting_approval", by=by)
    assert updates.render(waiting, "pl").text.endswith("Odezwiemy się do 3 grudnia 15:30.")
    assert updates.render(waiting, "it").text.endswith("entro il 3 dicembre 15:30.")
    assert updates.render(waiting, "lt").text.endswith("iki gruodžio 3 d. 15:30.")
    assert updates.render(waiting, "en").text.endswith("by December 3 15:30.")
    assert updates.render(waiting, "pl").wire_params() == {"by": "2026-12-03T15:30:00+01:00"}  # the local offset


def test_a_rendering_kept_for_reuse_is_reused_only_for_what_renders_the_same():
    """Renderings are kept by what decides their words: one instant shown in two zones is two texts."""
    says = followup_texts.catalogue()
    warsaw = datetime(2026, 12, 3, 15, 30, tzinfo=ZoneInfo("Europe/Warsaw"))
    one_instant = [warsaw, warsaw.astimezone(UTC), warsaw.astimezone(ZoneInfo("Europe/Vilnius"))]
    texts = [says.render(text("followup.progress_update.awaiting_approval", by=at), "en").text for at in one_instant]
    assert [t.removesuffix(".").rsplit(" ", 1)[1] for t in texts] == ["15:30", "14:30", "16:30"]
    again = says.render(text("followup.progress_update.awaiting_approval", by=warsaw), "en")
    assert again.text == texts[0]
    offers = compensation_texts.catalogue()
    taxi = offers.render(text("offer.reimbursement", cost=text("cost_kind.taxi"), amount=Money(1250, "PLN")), "pl")
    hotel = offers.render(text("offer.reimbursement", cost=text("cost_kind.hotel"), amount=Money(1250, "PLN")), "pl")
    assert taxi.text != hotel.text  # a nested text is part of the key
    assert (
        offers.render(text("offer.reimbursement", cost=text("cost_kind.taxi"), amount=Money(1250, "EUR")), "pl").text
        != taxi.text
    )

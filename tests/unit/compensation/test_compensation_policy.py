"""The compensation policy file: the shipped one loads; a bad one is refused with every bad key named."""

from __future__ import annotations

import pytest

from services.compensation.adapters.policies import PolicyBook
from services.compensation.domain.errors import PolicyError
from services.compensation.domain.model import Category, CostKind, RemedyKind, Severity
from services.compensation.domain.policy import load_policy
from tests.unit.compensation.compensation_builders import POLICY, POLICY_TEXT


def refused(text: str) -> dict[str, str]:
    with pytest.raises(PolicyError) as error:
        load_policy(text)
    return {v.field: v.description for v in error.value.violations}


def test_the_shipped_policy_loads_with_every_category_and_cost_kind():
    assert POLICY.version == "2026.4"
    assert set(POLICY.remedies) == set(Category)
    assert POLICY.goodwill.base["EUR"][Severity.MAJOR] == 4000
    assert set(POLICY.reimbursement_caps["PLN"]) == set(CostKind)
    assert POLICY.remedies[Category.BILLING_ERROR][0] is RemedyKind.ACCOUNT_CREDIT
    assert POLICY.budget("front-desk", "EUR") == 3_000_000
    assert POLICY.budget("front-desk", "GBP") is None  # its own table names no GBP budget
    assert POLICY.budget("anyone", "GBP") == 1_800_000
    assert "floor 500" in POLICY.summary()


def test_every_bad_key_is_named_at_once():
    text = (
        POLICY_TEXT.replace('late_delivery = ["voucher"', 'late_delivery = ["vouchr"')
        .replace("avoidable_bp = 3000", "avoidable_bp = 0.3")
        .replace("[caps.floor]\nEUR = 500", "[caps.floor]\nEUR = 50000")
        .replace(
            "[goodwill.base.GBP]\nminor = 500\nmoderate = 1300", "[goodwill.base.GBP]\nminor = 5000\nmoderate = 1300"
        )
        .replace("[abuse]\nwindow_days = 30", "[abuse]\nwindow_days = 30\nwindow_hours = 2")
        .replace("meal = 20000\n", "")
        .replace('currencies = ["EUR", "GBP", "PLN"]', 'currencies = ["EUR", "GBP", "PLN", "XXX"]')
    )
    bad = refused(text)
    assert bad["remedies.late_delivery[0]"] == "unknown remedy kind 'vouchr'"
    assert bad["goodwill.avoidable_bp"] == "must be an integer, got float"
    assert bad["caps.floor.EUR"] == "must not exceed caps.per_case.EUR (30000)"
    assert bad["goodwill.base.GBP"] == "bases must not decrease from minor to critical"
    assert bad["abuse.window_hours"] == "unknown key"
    assert bad["reimbursement.caps.PLN.meal"] == "is required"
    assert bad["currencies[3]"] == "unknown ISO-4217 currency 'XXX'"


@pytest.mark.parametrize(
    ("old", "new", "key", "why"),
    [
        ('version = "2026.4"', 'version = ""', "version", "is required and must be a non-empty string"),
        ("other = [", "others = [", "remedies.others", "unknown category"),
        ('other = ["voucher", "account_credit", "gift", "apology_note"]', 'other = ["apology_note"]',
         "remedies.other", "needs a kind besides apology_note (the gesture has to take some form)"),
        ('refund = ["account_credit", "voucher"]', 'refund = ["reimbursement"]', "alternatives.refund[0]",
         "reimbursement is not a goodwill kind (it has its own rules)"),
        ("{ name = \"gold\", from = 500000, bp = 2500 }", "{ name = \"gold\", from = 500000, bp = 500 }",
         "goodwill.value_tiers.EUR", "a higher tier must not get fewer basis points"),
        ('category = "cancellation"', 'category = "flight"', "statutory[0].category",
         "must be one of late_delivery, billing_error, cancellation, damaged_item, wrong_item, service_quality, "
         "no_show, other, got 'flight'"),
        ("EUR = [{ from = 0, amount = 25000 }", "EUR = [{ from = 50000, amount = 25000 }",
         "statutory[0].bands.EUR", "bands must be in strictly ascending order of 'from'"),
        ("[budget.team.front-desk]\nEUR = 3000000", "[budget.team.front-desk]\nUSD = 3000000",
         "budget.team.front-desk.USD", "unknown key"),
        ("order_share_bp = 5000", "order_share_bp = 0", "caps.order_share_bp", "must be at least 1, got 0"),
        ("version =", "versoin =", "versoin", "unknown key"),
    ],
)  # fmt: skip
def test_one_bad_key_is_named(old, new, key, why):
    assert old in POLICY_TEXT
    assert refused(POLICY_TEXT.replace(old, new, 1))[key] == why


def test_not_toml_at_all_is_refused():
    assert "<file>" in refused("version = ")


def test_a_version_reused_for_other_content_is_refused(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY_TEXT)
    with pytest.raises(PolicyError, match=r"'2026\.4' was already used for other content; bump the version"):
        PolicyBook(path, known={"2026.4": "0" * 64})
    book = PolicyBook(path, known={})
    assert book.loaded.version == "2026.4"
    path.write_text(POLICY_TEXT.replace("avoidable_bp = 3000", "avoidable_bp = 3500"))
    book._known["2026.4"] = book.loaded.sha256
    with pytest.raises(PolicyError):
        book.store.reload()
    assert book.loaded.policy.goodwill.avoidable_bp == 3000  # the previous policy stays in force

"""Open publishers: a system the contract does not name publishes without a contract change, known by its
CloudEvents source; the policy says what it stands for, or whether an unknown one is accepted or refused."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from intake_builders import NOW, POLICY_TEXT, policy, raw_report, report

from services.intake.domain.errors import InvalidFailureReport, PolicyError
from services.intake.domain.model import Source
from services.intake.domain.policy import load_policy
from services.intake.domain.rules import attribute_publisher, dedupe_key
from services.intake.domain.validation import validate_report

MAPPED = policy(publishers=MappingProxyType({"warehouse": Source.DELIVERY_TRACKING}))


def test_a_report_that_names_its_source_keeps_it_and_its_plain_key():
    command = attribute_publisher(raw_report(source=Source.BILLING), "billing-eu", MAPPED)
    assert (command.source, command.publisher) == (Source.BILLING, "")
    assert dedupe_key(validate_report(command, now=NOW)) == (Source.BILLING, "evt-1")


def test_a_listed_publisher_stands_for_its_source_and_is_trusted_like_it():
    command = attribute_publisher(raw_report(source=None), "warehouse", MAPPED)
    accepted = validate_report(command, now=NOW)
    assert (accepted.source, accepted.publisher, accepted.system_detected) == (
        Source.DELIVERY_TRACKING,
        "warehouse",
        True,
    )
    # Its ids are its own: delivery tracking's "evt-1" is another failure.
    assert dedupe_key(accepted) == (Source.DELIVERY_TRACKING, "warehouse/evt-1")


def test_an_unknown_publisher_is_an_other_system_never_put_right_automatically():
    accepted = validate_report(attribute_publisher(raw_report(source=None), "warehouse-eu", MAPPED), now=NOW)
    assert (accepted.source, accepted.system_detected) == (Source.OTHER_SYSTEM, False)
    assert dedupe_key(accepted) == (Source.OTHER_SYSTEM, "warehouse-eu/evt-1")


def test_two_unknown_publishers_equal_ids_are_two_failures():
    a = validate_report(attribute_publisher(raw_report(source=None), "a", MAPPED), now=NOW)
    b = validate_report(attribute_publisher(raw_report(source=None), "b", MAPPED), now=NOW)
    assert dedupe_key(a) != dedupe_key(b)


def test_an_unknown_publisher_is_refused_with_a_reason_when_the_policy_says_so():
    strict = policy(accept_unknown_publishers=False)
    with pytest.raises(InvalidFailureReport) as refused:
        validate_report(attribute_publisher(raw_report(source=None), "warehouse-eu", strict), now=NOW)
    [violation] = refused.value.violations
    assert violation.field == "source" and "'warehouse-eu'" in violation.description
    assert "[publishers.systems]" in violation.description


def test_other_system_sent_explicitly_is_keyed_by_its_publisher():
    accepted = validate_report(attribute_publisher(raw_report(source=Source.OTHER_SYSTEM), "x", MAPPED), now=NOW)
    assert dedupe_key(accepted) == (Source.OTHER_SYSTEM, "x/evt-1")
    assert report(source=Source.OTHER_SYSTEM).system_detected is False


def test_the_policy_reads_publishers_and_refuses_bad_ones_naming_the_key():
    text = POLICY_TEXT + '\n[publishers]\nunknown = "refuse"\n[publishers.systems."warehouse"]\nsource = "billing"\n'
    loaded = load_policy(text)
    assert (dict(loaded.publishers), loaded.accept_unknown_publishers) == ({"warehouse": Source.BILLING}, False)
    for bad, key in (
        ('[publishers]\nunknown = "maybe"\n', "publishers.unknown"),
        ('[publishers.systems."w"]\nsource = "frontline"\n', 'publishers.systems."w".source'),
        ('[publishers.systems."w"]\nsource = "warehouse"\n', 'publishers.systems."w".source'),
    ):
        with pytest.raises(PolicyError) as refused:
            load_policy(POLICY_TEXT + "\n" + bad)
        assert key in str(refused.value)
    assert load_policy(POLICY_TEXT).accept_unknown_publishers  # accepted (counted) unless the policy refuses

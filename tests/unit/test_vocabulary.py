"""The Python vocabulary mirrors common.proto's enums exactly, so the wire translation is total."""

from __future__ import annotations

import pytest
from recovery.events.v1 import common_pb2

from services.common.vocabulary import MIRRORS, Severity
from services.common.wire import enum_from_proto, enum_to_proto


@pytest.mark.parametrize("domain", list(MIRRORS), ids=lambda e: e.__name__)
def test_each_enum_has_exactly_the_proto_values(domain):
    proto = getattr(common_pb2, MIRRORS[domain])
    prefix = proto.DESCRIPTOR.values_by_number[0].name.removesuffix("UNSPECIFIED")
    wire = {v.name.removeprefix(prefix).lower() for v in proto.DESCRIPTOR.values if v.number != 0}
    assert {m.value for m in domain} == wire
    for member in domain:
        assert enum_from_proto(proto, enum_to_proto(proto, member), domain) is member


def test_every_enum_of_the_contract_is_mirrored():
    assert set(MIRRORS.values()) == set(common_pb2.DESCRIPTOR.enum_types_by_name)


def test_severity_orders_by_size_like_the_proto_numbers():
    assert Severity.MINOR < Severity.MODERATE < Severity.MAJOR < Severity.CRITICAL
    assert max(Severity) is Severity.CRITICAL and Severity.MAJOR >= Severity.MAJOR
    assert [s.rank for s in Severity] == [common_pb2.Severity.Value(f"SEVERITY_{s.name}") for s in Severity]

"""Generic translation between protobuf wire values and the plain Python values domains use.

No service's own vocabulary lives here: each service's ``adapters/wire.py`` maps its own dataclasses and
passes its own enums in. Only the contract's shared value messages (``services.common.vocabulary``) translate
here, once for every service. The conventions it relies on (see proto/README.md):

- a domain enum's values are the proto value names without the enum prefix, lower case
  (``CATEGORY_LATE_DELIVERY`` <-> ``Category.LATE_DELIVERY = "late_delivery"``);
- ``*_UNSPECIFIED`` (and any value this build does not know yet) is ``None`` in the domain;
- an unset ``Timestamp`` or message field is ``None``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from recovery.events.v1 import common_pb2

from services.common.errors import FieldViolation, InvalidInput
from services.common.money import Money
from services.common.texts import FALLBACK_LOCALE, CustomerText, parse_locale
from services.common.vocabulary import (
    CostItem,
    CostKind,
    CustomerRequest,
    OfferAdjustment,
    PersonalGesture,
    ReceiptReceived,
    RemedyKind,
    RemedySwap,
)

E = TypeVar("E", bound=enum.Enum)


def _prefix(proto_enum: EnumTypeWrapper) -> str:
    zero = proto_enum.DESCRIPTOR.values_by_number[0].name
    if not zero.endswith("_UNSPECIFIED"):
        raise ValueError(f"{proto_enum.DESCRIPTOR.full_name}: zero value must be *_UNSPECIFIED")
    return zero.removesuffix("UNSPECIFIED")


def enum_from_proto(proto_enum: EnumTypeWrapper, number: int, domain: type[E]) -> E | None:
    """Return the domain member for wire value ``number``; None for UNSPECIFIED or a value unknown here."""
    if number == 0:
        return None
    descriptor = proto_enum.DESCRIPTOR.values_by_number.get(number)
    if descriptor is None:
        return None  # a newer publisher's value: treated as unspecified, as the contract says
    name = descriptor.name.removeprefix(_prefix(proto_enum)).lower()
    try:
        return domain(name)
    except ValueError:
        return None


def enum_to_proto(proto_enum: EnumTypeWrapper, member: enum.Enum | None) -> int:
    """Return the wire number of ``member`` (0, UNSPECIFIED, for None)."""
    if member is None:
        return 0
    return proto_enum.Value(_prefix(proto_enum) + str(member.value).upper())


def enums_from_proto(proto_enum: EnumTypeWrapper, numbers: Any, domain: type[E]) -> tuple[E, ...]:
    """Return the known members of a repeated enum field, in order, without UNSPECIFIED or unknown values."""
    found = (enum_from_proto(proto_enum, n, domain) for n in numbers)
    return tuple(m for m in found if m is not None)


def money_from_proto(message: Any, field: str) -> Money | None:
    """Return ``message.<field>`` as Money; None when the field is unset."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    return Money(amount_minor=value.amount_minor, currency=value.currency)


def money_to_proto(money: Money | None) -> common_pb2.Money | None:
    """Return the wire Money (None stays None, so callers can leave a field unset)."""
    if money is None:
        return None
    return common_pb2.Money(amount_minor=money.amount_minor, currency=money.currency)


# The range google.protobuf.Timestamp defines: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def time_from_proto(message: Any, field: str) -> datetime | None:
    """Return ``message.<field>`` as an aware UTC datetime; None when unset.

    Raises InvalidInput naming the field when the wire value is outside the Timestamp range.
    """
    if not message.HasField(field):
        return None
    wire = getattr(message, field)
    if not (_MIN_SECONDS <= wire.seconds <= _MAX_SECONDS and 0 <= wire.nanos <= 999_999_999):
        raise InvalidInput.of(FieldViolation(field, "is not a valid timestamp (seconds or nanos out of range)"))
    return wire.ToDatetime(tzinfo=UTC)


def nul_fields(message: Message, prefix: str = "") -> list[str]:
    """Return the paths of the string fields (at any depth) holding a NUL character.

    No Postgres text column can store one, so a NUL is refused at the door rather than failing a transaction.
    Runs on every record and request, so it visits only the fields that can hold text (worked out once per
    message type).
    """
    found: list[str] = []
    texts, nested = _paths_to(message.DESCRIPTOR, FieldDescriptor.TYPE_STRING)
    for name, repeated in texts:
        value = getattr(message, name)
        if any("\x00" in text for text in value) if repeated else "\x00" in value:
            found.append(f"{prefix}{name}")
    for name, repeated in nested:
        if repeated:
            for i, item in enumerate(getattr(message, name)):
                found += nul_fields(item, f"{prefix}{name}[{i}].")
        elif message.HasField(name):
            found += nul_fields(getattr(message, name), f"{prefix}{name}.")
    return found


def _allowed(enum) -> str:
    return ", ".join(v.name for v in enum.values)


def unknown_enum_names(document: Any, descriptor, prefix: str = "") -> list[str]:
    """Return, for a proto3 JSON ``document`` of ``descriptor``, each enum value that names no value of its enum
    (``"SOURCE_WAREHOUSE"``, or a number it does not have), with the allowed names.

    The JSON parser drops such a value without a word when it ignores unknown fields, so a publisher would
    see the misleading "is required" instead of what it sent.
    """
    if not isinstance(document, dict) or descriptor.full_name.startswith("google.protobuf."):
        return []
    found: list[str] = []
    fields = {**descriptor.fields_by_name, **{f.json_name: f for f in descriptor.fields}}
    for key, value in document.items():
        field = fields.get(key)
        if field is None:
            continue
        path = f"{prefix}{field.name}"
        items = value if field.is_repeated and isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if field.is_repeated else path
            if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type.full_name != "google.protobuf.NullValue":
                enum = field.enum_type
                known = item in enum.values_by_name if isinstance(item, str) else item in enum.values_by_number
                if isinstance(item, str | int) and not isinstance(item, bool) and not known:
                    found.append(f"{where}: unknown value {item!r} (one of {_allowed(enum)})")
            elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
                found += unknown_enum_names(item, field.message_type, f"{where}.")
    return found


def unknown_enum_numbers(message: Message, prefix: str = "") -> list[str]:
    """Return each enum field of ``message`` (at any depth) holding a number its enum does not define (a binary
    publisher on a newer contract), with the allowed names.

    Runs on every record a consumer takes, so it visits only the fields that can hold an enum (worked out once
    per message type), not every field of every nested message.
    """
    found: list[str] = []
    enums, nested = _enum_paths(message.DESCRIPTOR)
    for name, repeated, known, enum_type in enums:
        value = getattr(message, name)
        for i, number in enumerate(value if repeated else (value,)):
            if number not in known:
                where = f"{prefix}{name}[{i}]" if repeated else f"{prefix}{name}"
                found.append(f"{where}: unknown value {number} (one of {_allowed(enum_type)})")
    for name, repeated in nested:
        if repeated:
            for i, item in enumerate(getattr(message, name)):
                found += unknown_enum_numbers(item, f"{prefix}{name}[{i}].")
        elif message.HasField(name):
            found += unknown_enum_numbers(getattr(message, name), f"{prefix}{name}.")
    return found


@cache
def _enum_paths(descriptor) -> tuple[tuple, tuple]:
    """Return a message type's enum fields (name, repeated, known numbers, enum) and the message fields whose
    types hold an enum at some depth (name, repeated)."""
    enums = tuple(
        (f.name, f.is_repeated, frozenset(f.enum_type.values_by_number), f.enum_type)
        for f in descriptor.fields
        if f.type == FieldDescriptor.TYPE_ENUM
    )
    return enums, _paths_to(descriptor, FieldDescriptor.TYPE_ENUM)[1]


@cache
def _paths_to(descriptor, field_type: int) -> tuple[tuple[tuple[str, bool], ...], tuple[tuple[str, bool], ...]]:
    """Return a message type's fields of ``field_type`` and the message fields whose types hold one at some
    depth, each as (name, repeated). Map fields and well-known types are left out."""
    own = tuple((f.name, f.is_repeated) for f in descriptor.fields if f.type == field_type)
    nested = tuple(
        (f.name, f.is_repeated)
        for f in descriptor.fields
        if f.type == FieldDescriptor.TYPE_MESSAGE
        and not f.message_type.GetOptions().map_entry
        and _holds(f.message_type, field_type, frozenset())
    )
    return own, nested


def _holds(descriptor, field_type: int, visiting: frozenset[str]) -> bool:
    """True when a message type has a field of ``field_type`` at some depth (well-known types and cycles
    excepted)."""
    if descriptor.full_name.startswith("google.protobuf.") or descriptor.full_name in visiting:
        return False
    inner = visiting | {descriptor.full_name}
    return any(
        f.type == field_type
        or (
            f.type == FieldDescriptor.TYPE_MESSAGE
            and not f.message_type.GetOptions().map_entry
            and _holds(f.message_type, field_type, inner)
        )
        for f in descriptor.fields
    )


def time_to_proto(at: datetime | None) -> Timestamp | None:
    """Return the wire Timestamp for an aware datetime (None stays None)."""
    if at is None:
        return None
    if at.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; use an aware one")
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp


def duration_from_proto(message: Any, field: str) -> timedelta | None:
    """Return ``message.<field>`` as a timedelta; None when unset."""
    if not message.HasField(field):
        return None
    return getattr(message, field).ToTimedelta()


def duration_to_proto(span: timedelta | None) -> Duration | None:
    """Return the wire Duration (None stays None)."""
    if span is None:
        return None
    wire = Duration()
    wire.FromTimedelta(span)
    return wire


def set_optional(message: Any, field: str, value: Any) -> None:
    """Set the message-typed ``field`` to ``value`` (a message), leaving it unset when ``value`` is None."""
    if value is not None:
        getattr(message, field).CopyFrom(value)


# ------------------------------------------------------------------ value messages of common.proto


def cost_from_proto(item: common_pb2.CostItem) -> CostItem:
    """Return the domain cost item (decoding never validates: it carries what the wire said)."""
    return CostItem(
        kind=enum_from_proto(common_pb2.CostKind, item.kind, CostKind),
        # No amount at all is carried as an empty currency, so validation names the field.
        amount=money_from_proto(item, "amount") or Money(amount_minor=0, currency=""),
        description=item.description,
        has_receipt=item.has_receipt,
        receipt_reference=item.receipt_reference,
    )


def cost_to_proto(item: CostItem) -> common_pb2.CostItem:
    """Return the wire cost item."""
    return common_pb2.CostItem(
        kind=enum_to_proto(common_pb2.CostKind, item.kind),
        amount=money_to_proto(item.amount),
        description=item.description,
        has_receipt=item.has_receipt,
        receipt_reference=item.receipt_reference,
    )


def swap_from_proto(item: common_pb2.RemedySwap) -> RemedySwap:
    return RemedySwap(
        from_kind=enum_from_proto(common_pb2.RemedyKind, item.from_kind, RemedyKind),
        to_kind=enum_from_proto(common_pb2.RemedyKind, item.to_kind, RemedyKind),
    )


def gesture_from_proto(item: common_pb2.PersonalGesture) -> PersonalGesture:
    return PersonalGesture(
        description=item.description,
        amount=money_from_proto(item, "amount") or Money(amount_minor=0, currency=""),
        reason=item.reason,
        employee_id=item.employee_id,
    )


def swap_to_proto(swap: RemedySwap) -> common_pb2.RemedySwap:
    return common_pb2.RemedySwap(
        from_kind=enum_to_proto(common_pb2.RemedyKind, swap.from_kind),
        to_kind=enum_to_proto(common_pb2.RemedyKind, swap.to_kind),
    )


def gesture_to_proto(gesture: PersonalGesture) -> common_pb2.PersonalGesture:
    return common_pb2.PersonalGesture(
        description=gesture.description,
        amount=money_to_proto(gesture.amount),
        reason=gesture.reason,
        employee_id=gesture.employee_id,
    )


def adjustment_from_proto(item: common_pb2.OfferAdjustment) -> OfferAdjustment:
    """Return the domain adjustment (decoding never validates: the receiving side's rules do)."""
    return OfferAdjustment(
        swaps=tuple(swap_from_proto(s) for s in item.swaps),
        gestures=tuple(gesture_from_proto(g) for g in item.gestures),
        late_costs=tuple(cost_from_proto(c) for c in item.late_costs),
        receipts=tuple(
            ReceiptReceived(
                cost_kind=enum_from_proto(common_pb2.CostKind, r.cost_kind, CostKind),
                receipt_reference=r.receipt_reference,
            )
            for r in item.receipts
        ),
    )


def adjustment_to_proto(adjustment: OfferAdjustment) -> common_pb2.OfferAdjustment:
    return common_pb2.OfferAdjustment(
        swaps=[swap_to_proto(s) for s in adjustment.swaps],
        gestures=[gesture_to_proto(g) for g in adjustment.gestures],
        late_costs=[cost_to_proto(c) for c in adjustment.late_costs],
        receipts=[
            common_pb2.ReceiptReceived(
                cost_kind=enum_to_proto(common_pb2.CostKind, r.cost_kind), receipt_reference=r.receipt_reference
            )
            for r in adjustment.receipts
        ],
    )


def request_from_proto(message: Any, field: str) -> CustomerRequest | None:
    """Return ``message.<field>`` as a customer request; None when unset."""
    if not message.HasField(field):
        return None
    wire = getattr(message, field)
    return CustomerRequest(
        remedy_kind=enum_from_proto(common_pb2.RemedyKind, wire.remedy_kind, RemedyKind),
        amount=money_from_proto(wire, "amount"),
        text=wire.text,
    )


def request_to_proto(request: CustomerRequest | None) -> common_pb2.CustomerRequest | None:
    """Return the wire customer request (None stays None, so callers can leave a field unset)."""
    if request is None:
        return None
    wire = common_pb2.CustomerRequest(
        remedy_kind=enum_to_proto(common_pb2.RemedyKind, request.remedy_kind), text=request.text
    )
    set_optional(wire, "amount", money_to_proto(request.amount))
    return wire


def customer_text_to_proto(text: CustomerText) -> common_pb2.CustomerText:
    """Return a rendered customer text with its template, locale and parameters (not localised)."""
    return common_pb2.CustomerText(
        template_id=text.template_id, locale=text.locale, params=text.wire_params(), text=text.text
    )


def customer_text_from_proto(message: Any, field: str, *, words: str = "") -> CustomerText:
    """Return the rendered customer text in ``field``; a message from before templates carries only ``words``."""
    if not message.HasField(field):
        return CustomerText("", locale=FALLBACK_LOCALE if words else "", text=words)
    wire = getattr(message, field)
    return CustomerText(wire.template_id, tuple(sorted(wire.params.items())), wire.locale, wire.text)


def locale_from_proto(value: str, field: str) -> str:
    """Return the supported locale ``value`` names ("" when empty); raises InvalidInput naming ``field``."""
    try:
        return parse_locale(value)
    except ValueError as exc:
        raise InvalidInput.of(FieldViolation(field, str(exc))) from None

"""Compensation's gRPC API for the frontline UI: what-if quotes, stored offers, the policy in force.

Every method is a read (QuoteOffer computes without storing), so every staff role may call all of them:
the frontline needs the what-if to talk to the customer, supervisors need the same view to approve.
No mutating RPC exists here (offers are made from events), so there is no client request id to replay.
"""

from __future__ import annotations

from recovery.compensation.v1 import compensation_pb2, compensation_pb2_grpc
from recovery.events.v1 import common_pb2

from services.common.auth import Rule, allow
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidInput
from services.common.grpc_server import method_path
from services.common.wire import enum_to_proto, time_to_proto
from services.compensation.adapters import repository, wire
from services.compensation.service_layer import handlers
from services.compensation.service_layer.handlers import Deps

SERVICE = compensation_pb2.DESCRIPTOR.services_by_name["CompensationService"].full_name
STAFF = ("agent", "senior_agent", "team_lead", "manager", "director")
RULES: dict[str, Rule] = {
    method_path(SERVICE, method): allow(*STAFF) for method in ("QuoteOffer", "GetOffer", "ListOffers", "GetPolicy")
}
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_ID = 128


def _require_id(value: str, field: str) -> None:
    if not value:
        raise InvalidInput.of(FieldViolation(field, "is required"))
    if len(value) > MAX_ID:
        raise InvalidInput.of(FieldViolation(field, f"must be at most {MAX_ID} characters"))


class CompensationApi(compensation_pb2_grpc.CompensationServiceServicer):
    """The CompensationService servicer: decode, run the handler in a transaction, encode."""

    def __init__(self, *, db: Database, deps: Deps) -> None:
        self._db = db
        self._deps = deps

    async def QuoteOffer(
        self, request: compensation_pb2.QuoteOfferRequest, context
    ) -> compensation_pb2.QuoteOfferResponse:
        subject = request.WhichOneof("subject")
        if subject is None:
            raise InvalidInput.of(FieldViolation("subject", "one of case_id or facts is required"))
        facts = None
        if subject == "case_id":
            _require_id(request.case_id, "case_id")
        else:
            wire.check_facts(request.facts)
            facts = wire.facts_from_proto(request.facts, at=self._deps.clock())
        override = wire.request_from_proto(request, "customer_request")
        async with self._db.transaction() as conn:
            offer = await handlers.quote(
                conn,
                deps=self._deps,
                case_id=request.case_id if subject == "case_id" else "",
                facts=facts,
                request=override,
                policy_version=request.policy_version,
            )
        return compensation_pb2.QuoteOfferResponse(offer=wire.offer_to_proto(offer))

    async def GetOffer(self, request: compensation_pb2.GetOfferRequest, context) -> compensation_pb2.GetOfferResponse:
        _require_id(request.offer_id, "offer_id")
        async with self._db.transaction() as conn:
            offer = await handlers.get_offer(conn, request.offer_id)
        return compensation_pb2.GetOfferResponse(offer=wire.offer_to_proto(offer))

    async def ListOffers(
        self, request: compensation_pb2.ListOffersRequest, context
    ) -> compensation_pb2.ListOffersResponse:
        _require_id(request.case_id, "case_id")
        size, below = _page(request)
        async with self._db.transaction() as conn:
            offers = await repository.list_offers(
                conn,
                request.case_id,
                include_superseded=request.include_superseded,
                below_version=below,
                limit=size + 1,  # one more than asked tells whether another page exists
            )
        page = offers[:size]
        token = str(page[-1].version) if len(offers) > size else ""
        return compensation_pb2.ListOffersResponse(offers=[wire.offer_to_proto(o) for o in page], next_page_token=token)

    async def GetPolicy(
        self, request: compensation_pb2.GetPolicyRequest, context
    ) -> compensation_pb2.GetPolicyResponse:
        async with self._db.transaction() as conn:
            current = await self._deps.policies.save_current(conn)
            version = request.version or current.version
            policy, stored = await self._deps.policies.version(conn, version)
        response = compensation_pb2.GetPolicyResponse(
            version=stored.version,
            current=stored.version == current.version,
            content_sha256=stored.sha256,
            summary=policy.summary(),
            loaded_at=time_to_proto(stored.loaded_at),
        )
        for category, kinds in policy.remedies.items():
            response.category_remedies.append(
                compensation_pb2.CategoryRemedies(
                    category=enum_to_proto(common_pb2.Category, category),
                    remedy_kinds=[enum_to_proto(common_pb2.RemedyKind, k) for k in kinds],
                )
            )
        return response


def _page(request: compensation_pb2.ListOffersRequest) -> tuple[int, int | None]:
    violations = []
    if request.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    below = None
    if request.page_token:
        # The token is the version of the last offer on the previous page (pages go down by version).
        if not request.page_token.isdigit() or len(request.page_token) > 9:
            violations.append(FieldViolation("page_token", "is not a token this service returned"))
        else:
            below = int(request.page_token)
    if violations:
        raise InvalidInput.of(*violations)
    return min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), below

"""A minimal service built on the kit's runtime, for testing the runtime itself (not a product service).

It consumes StringValue records from ``ECHO_INPUT_TOPIC``, writes each into its table and stages an
echo on ``ECHO_OUTPUT_TOPIC`` through the outbox; its gRPC method ``test.v1.Echo/Say`` echoes a string.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from google.protobuf.wrappers_pb2 import StringValue

from services.common import cloudevents, outbox
from services.common.auth import allow
from services.common.consumer import Incoming, Subscription, each
from services.common.runtime import Kit, ServiceParts, main
from services.common.settings import KitSettings

MIGRATIONS = Path(__file__).parent / "echo_migrations"
SAY = "/test.v1.Echo/Say"


async def build(kit: Kit) -> ServiceParts:
    input_topic = os.environ["ECHO_INPUT_TOPIC"]
    output_topic = os.environ["ECHO_OUTPUT_TOPIC"]

    async def handle(conn, incoming: Incoming) -> None:
        await conn.execute(
            "INSERT INTO echoes (ce_id, value) VALUES ($1, $2)", incoming.event.id, incoming.message.value
        )
        await outbox.stage(
            conn,
            outbox.event_record(
                output_topic, StringValue(value=incoming.message.value), key=incoming.customer_id, source="echo"
            ),
        )

    async def say(request: StringValue, context) -> StringValue:
        return StringValue(value=f"echo: {request.value}")

    def register(server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            say, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.v1.Echo", {"Say": handler}),))

    return ServiceParts(
        subscriptions=[Subscription(topic=input_topic, types=cloudevents.registry(StringValue), handler=each(handle))],
        grpc_register=[register],
        grpc_service_names=["test.v1.Echo"],
        grpc_rules={SAY: allow("agent")},
    )


if __name__ == "__main__":
    main(KitSettings.from_env(), build=build, migrations_dir=MIGRATIONS)

"""Followup's entrypoints: Kafka consumers and the gRPC API. Decode, hand to a handler, encode."""

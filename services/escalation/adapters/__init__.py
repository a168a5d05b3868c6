"""Escalation adapters: Postgres repository, protobuf translation, metrics."""

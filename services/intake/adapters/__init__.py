"""Intake's adapters: Postgres store, protobuf translation, metrics."""

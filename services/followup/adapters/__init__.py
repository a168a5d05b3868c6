"""Followup's adapters: the Postgres store, protobuf translation and business metrics."""

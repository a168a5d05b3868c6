"""Followup's handlers: one per command, in the caller's transaction, staging events in the outbox."""

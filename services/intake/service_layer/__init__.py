"""Intake's handlers: one per command, each inside the caller's transaction."""

"""Escalation handlers: one per command or event, inside the caller's transaction."""

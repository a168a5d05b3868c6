"""Escalation's handlers, by concern: arrivals (Kafka), casework (the frontline), approvals (authority), timers;
steps holds what they all do the same way. Each runs inside the caller's transaction."""

"""Escalation entrypoints: Kafka consumers and the CaseService gRPC servicer."""

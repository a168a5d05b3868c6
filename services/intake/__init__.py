"""Intake: captures failures from internal systems (Kafka) and the frontline (gRPC), once, with context.

Validates, de-duplicates, merges, enriches with the customer's history, classifies severity,
avoidability and recovery outlook, and spots hot spots.
"""

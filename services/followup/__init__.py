"""Followup: durable delayed check-ins, exactly once, cancellable.

Satisfaction checks, check-ins days later and corrective-action notices, as rows with a due time
claimed by a scheduler loop. Built in issue 6.
"""

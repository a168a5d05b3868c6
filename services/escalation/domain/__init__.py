"""Escalation's pure domain: the case lifecycle, empowerment limits, calendars and SLA clocks."""

"""Escalation: frontline-first empowerment limits, SLA clocks, approvals and the case API.

The employee who first hears the customer owns the case and grants remedies within their limits;
only what is above them goes to the lowest tier that covers it. Built in issue 5.
"""

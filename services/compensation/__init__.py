"""Compensation: itemised, explained, policy-versioned goodwill offers.

The customer's own costs reimbursed, plus a gesture scaled by severity, customer value, repeat
failure and avoidability. Built in issue 4.
"""

"""Intake's pure domain: failure reports, their validation and classification, and the merge rule.

Nothing here does I/O or knows about protobuf; entrypoints translate the wire to these dataclasses.
"""

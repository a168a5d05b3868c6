"""Followup's pure domain: what to schedule after a resolution, when it is due, and what feedback means.

Nothing here does I/O or knows about protobuf; entrypoints translate the wire to these dataclasses.
"""

"""Transaction scripts, one per operation, grouped by resource.

Each service takes a ``Request`` (session, clock, idempotency key) and a validated
contract, does its work inside the caller's transaction and returns an ``Outcome``.
The caller (a task, or ``execute``) owns the commit.
"""

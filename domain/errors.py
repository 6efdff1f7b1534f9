"""Billing errors.

    BillingError                  every error a request can cause; final, never retried
    ├── BadRequest                a field is missing, malformed or out of bounds (.field)
    │   ├── IdempotencyConflict   the key was used before with other parameters
    │   └── SubscriptionCurrencyConflict  the customer's active subscriptions bill another currency
    ├── NotFound                  the object named by a field does not exist (.field;
    │                             .deleted when it existed and was deleted: never there again)
    ├── WrongState                the object exists but the operation is not allowed now
    │   ├── CurrencyLocked        the customer's default currency is already set
    │   └── NothingToInvoice      no pending items of that currency
    └── Parked                    a message redelivered too often without finishing

    TransientError                infrastructure trouble (database, broker, lock timeout);
                                  the only kind that is retried

Every error carries a machine-readable ``code``, Stripe's error ``type``
(``invalid_request_error``; ``idempotency_error`` for a key reused with other parameters;
``api_error`` for what is not the request's fault) and, where a request field is to
blame, the ``field`` name in Stripe's spelling (``lines[2].amount``), so a caller
can show it next to the input that caused it.
"""

from __future__ import annotations


class BillingError(Exception):
    code = "billing_error"
    type = "invalid_request_error"
    """Stripe's error type (``error.type`` in its API); ``code`` says which error of the type."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take other constructor arguments; rebuild from the state instead.
        return (_restore, (type(self), self.args, self.__dict__))

    def as_dict(self) -> dict[str, str | None]:
        return {
            "type": self.type,
            "code": self.code,
            "field": self.field,
            "message": self.message,
            "class": type(self).__name__,
        }

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class BadRequest(BillingError):
    code = "invalid_request"


class IdempotencyConflict(BadRequest):
    """Stripe answers a key reused with other parameters with an ``idempotency_error``. The
    code stays ``idempotency_key_in_use`` (what producers and ``billing failures --code``
    match on): a concurrent request with the same key, Stripe's other use of that code,
    never fails here, it waits for the first and replays."""

    code = "idempotency_key_in_use"
    type = "idempotency_error"

    def __init__(self, key: str, operation: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for {operation} with other parameters",
            field="idempotency_key",
        )


class SubscriptionCurrencyConflict(BadRequest):
    """A customer never has two active subscriptions in different currencies (domain/README.md §8)."""

    code = "subscription_currency_conflict"


class NotFound(BillingError):
    code = "resource_missing"

    def __init__(
        self, resource: str, object_id: str, *, field: str | None = None, deleted: bool = False
    ) -> None:
        super().__init__(f"no such {resource}: {object_id!r}", field=field)
        self.resource = resource
        self.object_id = object_id
        self.deleted = deleted
        """It existed and was deleted: unlike a missing one it cannot be on its way (in another
        queue, or being redelivered), so a request naming it is never retried."""


class WrongState(BillingError):
    code = "invalid_state"


class CurrencyLocked(WrongState):
    code = "currency_locked"


class NothingToInvoice(WrongState):
    code = "invoice_no_pending_items"


def _restore(cls: type[BillingError], args: tuple[object, ...], state: dict[str, object]) -> BillingError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class Parked(BillingError):
    """A message that keeps failing to finish (it crashes or outlives its worker) is set aside."""

    code = "message_parked"
    type = "api_error"


def error_type(error_class: str) -> str:
    """Stripe's error type of an error recorded by its class name (``task_failures.error_type``):
    a billing error's own, ``api_error`` for anything else (a bug, a timeout, an outage)."""
    pending: list[type[BillingError]] = [BillingError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == error_class:
            return cls.type
        pending.extend(cls.__subclasses__())
    return "api_error"


class TransientError(Exception):
    """Infrastructure trouble: the same request may succeed later, so it is retried."""

"""Domain errors: every rule violation raises a `DomainError` subclass with a stable code."""

from __future__ import annotations


class DomainError(Exception):
    """A command broke a domain rule. `code` is stable; the API maps it to problem JSON."""

    code = "domain_error"
    #: More members for the problem document (a quota's limit, say) and response headers (Retry-After);
    #: instances that have some assign their own dicts.
    extra: dict[str, object] = {}
    headers: dict[str, str] = {}

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class IllegalTransitionError(DomainError):
    """A state machine was asked to move along an edge it does not have."""

    code = "illegal_transition"


class OperationInProgressError(DomainError):
    """An instance already has a queued or running operation."""

    code = "operation_in_progress"


class NameTakenError(DomainError):
    """The caller already has a live instance with this name."""

    code = "name_taken"


class IdempotencyKeyReusedError(DomainError):
    """The Idempotency-Key was used before with a different request body."""

    code = "idempotency_key_reused"


class OperationNotClaimableError(DomainError):
    """The operation is not queued, so no worker may claim it."""

    code = "operation_not_claimable"

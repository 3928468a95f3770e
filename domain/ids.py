"""Deterministic ids: uuid5 over natural keys, so retries and duplicates meet in the store."""

from __future__ import annotations

from uuid import UUID, uuid5

#: The namespace of every ZLH id. Never change it: ids in the log depend on it.
NAMESPACE = UUID("6d1f0a52-3c4e-5b7a-9f1e-2a8c7d4b9e01")


def derive(*parts: object) -> UUID:
    """A stable id for a natural key made of `parts`."""
    return uuid5(NAMESPACE, "/".join(str(p) for p in parts))


def operation_id_for_key(owner_id: UUID, idempotency_key: str) -> UUID:
    """The operation a caller's Idempotency-Key names: one per (caller, key), forever."""
    return derive("operation", owner_id, idempotency_key)


def instance_id_for_operation(operation_id: UUID) -> UUID:
    """The instance a create operation makes: derived, so a replay finds the same one."""
    return derive("instance", operation_id)


def name_claim_id(owner_id: UUID, name: str) -> UUID:
    return derive("name-claim", owner_id, name)


def user_id_for_email(email: str) -> UUID:
    return derive("user", email.strip().lower())


def credential_id(token_hash: str) -> UUID:
    return derive("credential", token_hash)


def short_id(instance_id: UUID) -> str:
    """Eight hex characters of the instance id, for public names (`NAME-SHORTID`)."""
    return instance_id.hex[:8]

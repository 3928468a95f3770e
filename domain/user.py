"""The `User` and `Credential` aggregates.

A user's id derives from the email, so emails are unique by construction. A
`Credential` is keyed by the SHA-256 hash of an API token and names its user:
the token itself is never stored anywhere.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.ids import credential_id, user_id_for_email


class User(Aggregate):
    TOPIC = "zlh.User"

    class Event(Aggregate.Event):
        TOPIC = "zlh.User.Event"

    class Registered(Event, Aggregate.Created):
        TOPIC = "zlh.User.Registered"
        email: str
        admin: bool

    class TokenIssued(Event):
        TOPIC = "zlh.User.TokenIssued"
        token_hash: str

    @staticmethod
    def create_id(email: str) -> UUID:
        return user_id_for_email(email)

    @event(Registered)
    def __init__(self, email: str, admin: bool) -> None:
        self.email = email
        self.admin = admin
        self.token_hashes: list[str] = []

    def issue_token(self, token_hash: str) -> Credential:
        """Record a new token hash and return the credential that maps it to this user."""
        self._token_issued(token_hash=token_hash)
        return Credential(token_hash=token_hash, user_id=self.id)

    @event(TokenIssued)
    def _token_issued(self, token_hash: str) -> None:
        self.token_hashes.append(token_hash)


class Credential(Aggregate):
    TOPIC = "zlh.Credential"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Credential.Event"

    class Issued(Event, Aggregate.Created):
        TOPIC = "zlh.Credential.Issued"
        token_hash: str
        user_id: UUID

    @staticmethod
    def create_id(token_hash: str) -> UUID:
        return credential_id(token_hash)

    @event(Issued)
    def __init__(self, token_hash: str, user_id: UUID) -> None:
        self.token_hash = token_hash
        self.user_id = user_id

"""Fill a ZLH event log fast, through the project's own store, for the benchmarks.

Aggregates are built with the domain's constructors and commands, exactly as the services build them
(ids derived the same way), and saved many at a time: one `app.save(*aggregates)` per batch, so a batch
is one transaction (and one hash-chain insert) instead of one per request. Two shapes:

- `queued_creates`: what `POST /api/instances` writes, and nothing more: per create an `Operation`
  (Requested), its `Instance` (Requested) and its `NameClaim` (Claimed); 10 creates per customer
  (each customer a `User` with a `Credential`), so no customer is over the default instance quota.
- `completed_creates`: a log as provisioning leaves it: the same, plus the operation's `Claimed`, a
  StepStarted/StepSucceeded pair per create step, `Succeeded`, and the instance's `Provisioned`
  (19.3 events per create on average, customers included), until the log holds N events.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.ids import instance_id_for_operation, operation_id_for_key, short_id
from domain.instance import Instance
from domain.lifecycle import InstanceKind
from domain.name_claim import NameClaim
from domain.operation import Operation, OperationKind
from domain.plans import create_steps
from domain.user import Credential, User
from services.infrastructure.store import ZLH
from services.instances import fingerprint
from services.users import FIRST_TOKEN_NAME, hash_token, new_token

CREATES_PER_CUSTOMER = 10
#: Aggregates per `app.save`: about 2,000 events per transaction for completed creates.
BATCH_CREATES = 100


def _customer(tag: str) -> tuple[User, Any]:
    user = User(email=f"{tag}@bench.example", admin=False)
    return user, Credential.issue(hash_token(new_token()), user.id, FIRST_TOKEN_NAME, "full", None,
                                  datetime.now(UTC))


def _create(owner_id: UUID, key: str, name: str, completed: bool) -> list[Any]:
    body = {"kind": "game", "name": name, "template": "minecraft"}
    operation_id = operation_id_for_key(owner_id, key)
    instance_id = instance_id_for_operation(operation_id)
    instance = Instance(owner_id=owner_id, kind="game", name=name, template="minecraft",
                        edge_name=f"{name}-{short_id(instance_id)}", operation_id=operation_id)
    operation = Operation(request_key=key, kind=OperationKind.CREATE.value, instance_id=instance_id,
                          owner_id=owner_id, fingerprint=fingerprint("POST /api/instances", body), params=body)
    claim = NameClaim(owner_id=owner_id, name=name, instance_id=instance_id)
    if completed:
        operation.claim("bench:eventlog")
        port = 25565
        for step in create_steps(InstanceKind.GAME):
            operation.start_step(step, {"port": port} if step != "allocate_port" else {})
            operation.finish_step(step, {"port": port} if step == "allocate_port" else {})
        address = f"127.0.0.1:{port}"
        operation.succeed({"port": port, "address": address})
        instance.provision(operation.id, port, address)
    return [operation, instance, claim]


def _creates(completed: bool) -> Iterator[list[Any]]:
    """Endless: the aggregates of one create at a time (a new customer's first create includes the customer)."""
    run = secrets.token_hex(3)
    customer = 0
    while True:
        customer += 1
        user, credential = _customer(f"bench-{run}-{customer}")
        for i in range(CREATES_PER_CUSTOMER):
            aggregates = _create(user.id, f"bench-{i}", f"server-{i}", completed)
            yield ([user, credential, *aggregates] if i == 0 else aggregates)


def _pending_events(aggregates: list[Any]) -> int:
    return sum(len(a.pending_events) for a in aggregates)


def _fill(app: ZLH, creates: Iterator[list[Any]], stop: Callable[[int, int], bool],
          progress: Callable[[int], None] | None) -> tuple[int, int]:
    """Save creates in batches until `stop(creates, events)`; return (creates, events) written."""
    total_creates = total_events = 0
    while not stop(total_creates, total_events):
        batch: list[Any] = []
        for aggregates in creates:
            batch += aggregates
            total_creates += 1
            total_events += _pending_events(aggregates)
            if total_creates % BATCH_CREATES == 0 or stop(total_creates, total_events):
                break
        app.save(*batch)
        if progress is not None:
            progress(total_events)
    return total_creates, total_events


def queued_creates(app: ZLH, n: int, progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Append `n` queued create operations (with their instances, name claims and customers)."""
    return _fill(app, _creates(completed=False), lambda c, _e: c >= n, progress)


def completed_creates(app: ZLH, n_events: int, progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Append completed creates until at least `n_events` events are in this run's part of the log."""
    return _fill(app, _creates(completed=True), lambda _c, e: e >= n_events, progress)

"""Use cases for instances: the idempotent, asynchronous create.

`request_instance` does no provisioning work. It writes, in one atomic save, the
`Operation` (id derived from the caller and the Idempotency-Key), the `Instance`
(id derived from the operation), the `NameClaim` (id derived from the owner and
name) and the owner's instances `Quota`. Concurrent duplicates collide in the store on
those ids: exactly one save succeeds; every other request then reads what won and
answers from it. Concurrent creates of one owner collide on the quota's version, so
the limit is never overshot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.errors import IdempotencyKeyReusedError, NameTakenError
from domain.ids import instance_id_for_operation, operation_id_for_key, short_id
from domain.instance import Instance
from domain.name_claim import NameClaim
from domain.operation import Operation, OperationKind
from domain.text import check_text
from services.billing import check_billing_gate
from services.infrastructure.keyed_locks import CUSTOMER_TURNS
from services.infrastructure.store import ZLH
from services.infrastructure.templates import TemplateCatalogue, shipped_catalogue
from services.quotas import UNLIMITED, Quotas, take_instance_slot


def fingerprint(route: str, body: dict[str, Any]) -> str:
    """SHA-256 of the route and the canonical JSON body: what "the same request" means."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class Accepted:
    """The answer to an accepted create: what was written, and whether this is a replay."""

    operation_id: UUID
    instance_id: UUID
    replayed: bool
    position: int  # the log position to wait for, for read-your-writes


def request_instance(
    app: ZLH, owner_id: UUID, idempotency_key: str, kind: str, name: str, template: str,
    variables: Mapping[str, Any] | None = None, templates: TemplateCatalogue | None = None,
    quotas: Quotas = UNLIMITED,
) -> Accepted:
    """Queue a create operation, or replay the one this key already made.

    `variables` are checked against the template from `templates` (default: the shipped ones);
    the resolved set (defaults, generated tokens) is recorded with the instance. The request's
    fingerprint covers the variables the caller sent, so the same key with other variables is
    `idempotency_key_reused`; a body without variables fingerprints as it always did.
    """
    for field, value in (("name", name), ("template", template), ("Idempotency-Key", idempotency_key)):
        check_text(field, value)
    catalogue = templates or shipped_catalogue()
    body: dict[str, Any] = {"kind": kind, "name": name, "template": template}
    if variables:
        body["variables"] = dict(variables)
    print_ = fingerprint("POST /api/instances", body)
    operation_id = operation_id_for_key(owner_id, idempotency_key)
    with CUSTOMER_TURNS(owner_id):  # this customer's creates take turns here: they would conflict on the quota
        return _request_instance(app, owner_id, idempotency_key, kind, name, template, variables, catalogue,
                                 quotas, print_, operation_id)


def _request_instance(app: ZLH, owner_id: UUID, idempotency_key: str, kind: str, name: str, template: str,
                      variables: Mapping[str, Any] | None, catalogue: TemplateCatalogue, quotas: Quotas,
                      print_: str, operation_id: UUID) -> Accepted:
    for _ in range(100):
        replay = _replay(app, operation_id, print_)
        if replay is not None:
            return replay
        resolved = catalogue.resolve(kind, template, variables)
        check_billing_gate(app, owner_id, "create")
        instance_id = instance_id_for_operation(operation_id)
        try:
            claim = _claim_name(app, owner_id, name, instance_id)
        except NameTakenError:
            # A concurrent duplicate of this very request may have committed since we looked.
            replay = _replay(app, operation_id, print_)
            if replay is not None:
                return replay
            raise
        instance = Instance(
            owner_id=owner_id, kind=kind, name=name, template=template,
            edge_name=f"{name}-{short_id(instance_id)}", operation_id=operation_id, variables=resolved,
        )
        operation = Operation(
            request_key=idempotency_key, kind=OperationKind.CREATE.value, instance_id=instance_id,
            owner_id=owner_id, fingerprint=print_, params={"kind": kind, "name": name, "template": template},
        )
        quota = quotas.instances(app, owner_id)
        take_instance_slot(app, quota, instance_id, quotas.instances_per_user)
        try:
            recordings = app.save(operation, instance, claim, quota)
        except IntegrityError:
            continue  # a concurrent duplicate, name claim or create of this owner won: look again
        return Accepted(operation_id, instance_id, False, recordings[-1].notification.id)
    raise RuntimeError("request_instance: too much contention")


def prior_operation(app: ZLH, operation_id: UUID, print_: str) -> Operation | None:
    """The operation an Idempotency-Key already made, if any; a different request under it is 422."""
    operation = app.find(operation_id, Operation)
    if operation is None:
        return None
    if operation.fingerprint != print_:
        raise IdempotencyKeyReusedError("this Idempotency-Key was already used with a different request")
    return operation


def _replay(app: ZLH, operation_id: UUID, print_: str) -> Accepted | None:
    operation = prior_operation(app, operation_id, print_)
    if operation is None:
        return None
    # A replay may race the first request: make its reads wait for everything written so far.
    return Accepted(operation.id, operation.instance_id, True, app.head())


def _claim_name(app: ZLH, owner_id: UUID, name: str, instance_id: UUID) -> NameClaim:
    claim = app.find(NameClaim.create_id(owner_id, name), NameClaim)
    if claim is None:
        return NameClaim(owner_id=owner_id, name=name, instance_id=instance_id)
    claim.claim(instance_id)
    return claim


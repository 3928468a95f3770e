"""Every projection the control plane maintains, by name."""

from __future__ import annotations

from projections.announcements import AnnouncementsProjection
from projections.backups import BackupsProjection
from projections.base import Projection
from projections.deliveries import DeliveriesProjection
from projections.instances import InstancesProjection
from projections.operations import OperationsProjection
from projections.tickets import TicketsProjection


def all_projections() -> list[Projection]:
    return [InstancesProjection(), OperationsProjection(), BackupsProjection(), TicketsProjection(),
            AnnouncementsProjection(), DeliveriesProjection()]

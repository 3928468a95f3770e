"""Every projection the control plane maintains, by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from projections.activity import ActivityProjection
from projections.announcements import AnnouncementsProjection
from projections.backups import BackupsProjection
from projections.base import Projection
from projections.billing import BillingProjection
from projections.deliveries import DeliveriesProjection
from projections.instances import InstancesProjection
from projections.monitoring import MonitoringTargetsProjection
from projections.nodes import NodesProjection
from projections.operations import OperationsProjection
from projections.repairs import RepairsProjection
from projections.schedules import SchedulesProjection
from projections.subusers import SubusersProjection
from projections.tickets import InboundMailProjection, TicketsProjection
from projections.tokens import TokensProjection
from projections.users import UsersProjection


def all_projections(data_dir: Path | None = None,
                    write_text: Callable[[Path, str], None] | None = None) -> list[Projection]:
    """Every projection; with `data_dir` and `write_text`, the monitoring one also exports its file_sd targets."""
    return [InstancesProjection(), OperationsProjection(), BackupsProjection(), TicketsProjection(),
            AnnouncementsProjection(), DeliveriesProjection(), MonitoringTargetsProjection(data_dir, write_text),
            RepairsProjection(), BillingProjection(), UsersProjection(), SchedulesProjection(),
            ActivityProjection(), TokensProjection(), InboundMailProjection(),
            SubusersProjection(), NodesProjection()]

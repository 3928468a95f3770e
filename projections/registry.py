"""Every projection the control plane maintains, by name."""

from __future__ import annotations

from projections.backups import BackupsProjection
from projections.base import Projection
from projections.instances import InstancesProjection
from projections.operations import OperationsProjection


def all_projections() -> list[Projection]:
    return [InstancesProjection(), OperationsProjection(), BackupsProjection()]

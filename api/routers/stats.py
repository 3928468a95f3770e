"""An instance's live stats: CPU, memory, disk and players, sampled by its node every 5 s (15 minutes kept)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import ContainerDep
from api.server_access import MemberGrant
from services import stats

router = APIRouter(prefix="/api/instances", tags=["stats"])


class Sample(BaseModel):
    cpu_percent: float
    memory_bytes: int | None
    disk_bytes: int | None
    players_online: int | None
    players_max: int | None
    sampled_at: str


class Limits(BaseModel):
    memory_mb: int
    cpus: float
    disk_bytes: int


class LastExit(BaseModel):
    reason: str
    status: int | None = None
    detail: str = ""
    at: str


class StatsOut(BaseModel):
    """`current` is null while the instance is not running; `history` is oldest first, the last 15 minutes.

    Beyond the contract: the instance's `disk_bytes` and `disk_quota_bytes` (writes over the quota are
    409 `quota_exceeded`), its `limits`, whether the kernel enforces memory and CPU on its node
    (`limits_enforced`), and how its server last ended (`last_exit.reason`: `out_of_memory`, `stopped`,
    `killed`, `exited`)."""

    current: Sample | None
    history: list[Sample]
    disk_bytes: int | None = None
    disk_quota_bytes: int | None = None
    limits: Limits | None = None
    limits_enforced: bool | None = None
    last_exit: LastExit | None = None


@router.get("/{instance_id}/stats", response_model=StatsOut)
async def instance_stats(instance_id: UUID, grant: MemberGrant, container: ContainerDep) -> StatsOut:
    """Anyone on the server (its owner, a subuser, an operator) sees its stats."""
    body = await run_in_threadpool(stats.instance_stats, container.app, container.driver, grant.owner_id,
                                   instance_id)
    return StatsOut(**body)

"""Templates: what a customer can create, and the variables each template takes."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ContainerDep, UserDep
from api.pagination import CursorQuery, LimitQuery, page_of
from api.schemas import TemplateList, TemplateOut

router = APIRouter(prefix="/api", tags=["templates"])


@router.get("/templates", response_model=TemplateList)
def list_templates(user: UserDep, container: ContainerDep, limit: LimitQuery = 100,
                   cursor: CursorQuery = None) -> TemplateList:
    """Every template on offer: name, kind, description, the variables customers may set (type, default,
    constraints; generated secrets have no default), default resources, and whether it is available (a
    template the operator has not configured yet, such as Paper without its jar, is not)."""
    items, next_cursor = page_of([TemplateOut(**t.public()) for t in container.templates.all()], limit, cursor)
    return TemplateList(items=items, next_cursor=next_cursor)

"""An instance's files, through the node agent: list, read, write."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import ContainerDep, UserDep
from api.openapi import FILE_PATH
from api.server_access import FilesReadGrant, FilesWriteGrant
from services import files

router = APIRouter(prefix="/api/instances", tags=["files"])

PathQuery = Annotated[str, Query(min_length=1, json_schema_extra=FILE_PATH,
                                 description="path inside the instance root: at most 4,096 bytes of "
                                 "UTF-8, each name at most 255 (else 400 bad_path)")]


class Entry(BaseModel):
    name: str
    type: str
    size: int


class Listing(BaseModel):
    path: str
    entries: list[Entry]


@router.get("/{instance_id}/files", response_model=Listing)
async def list_files(instance_id: UUID, grant: FilesReadGrant, container: ContainerDep,
                     path: PathQuery = "/") -> Listing:
    entries = await run_in_threadpool(files.list_files, container.app, container.driver, grant.owner_id, instance_id,
                                      path)
    return Listing(path=path, entries=[Entry(**e) for e in entries])


@router.get("/{instance_id}/files/content")
async def read_file(instance_id: UUID, grant: FilesReadGrant, container: ContainerDep, path: PathQuery) -> Response:
    content = await run_in_threadpool(files.read_file, container.app, container.driver, grant.owner_id, instance_id,
                                      path)
    return Response(content, media_type="application/octet-stream")


@router.put("/{instance_id}/files/content", status_code=204)
async def write_file(instance_id: UUID, request: Request, user: UserDep, grant: FilesWriteGrant,
                     container: ContainerDep, path: PathQuery) -> Response:
    # api/limits.py has refused a body over MAX_UPLOAD_BYTES before this runs (by Content-Length) or while
    # it is read (chunked), so at most 8 MiB is ever held here.
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    await run_in_threadpool(files.write_file, container.app, container.driver, grant.owner_id, instance_id, path,
                            bytes(body), user.id)
    return Response(status_code=204)

"""SFTP: the account's SSH public keys, and each server's SFTP connection details and password.

The SFTP server itself is services/workers/sftp.py; sign-in rules are services/sftp.py.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import ContainerDep, UserDep
from api.pagination import CursorQuery, LimitQuery, page_of
from api.schemas import FreeText
from api.server_access import FilesReadGrant
from services import sftp

router = APIRouter(prefix="/api", tags=["sftp"])


class NewSshKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: FreeText = Field(min_length=1, max_length=100, description="what the key is for, e.g. `laptop`")
    public_key: str = Field(min_length=1, max_length=sftp.MAX_PUBLIC_KEY,
                            description="one line of `id_ed25519.pub` (OpenSSH form; RFC 4716 also accepted)")


class SshKeyOut(BaseModel):
    id: str
    name: str
    public_key: str = Field(description="`ALGORITHM BASE64`, the comment dropped")
    algorithm: str
    fingerprint: str = Field(description="`SHA256:…`, as `ssh-keygen -lf KEY.pub` prints it")
    created_at: str


class SshKeyList(BaseModel):
    items: list[SshKeyOut]
    next_cursor: str | None = None


class SftpDetails(BaseModel):
    host: str
    port: int
    username: str = Field(description="`EMAIL.SHORTID`: your account's email, a dot, the server's short id")
    password_set: bool = Field(description="whether you have an SFTP password on this server")
    host_key_fingerprint: str | None = Field(description="the SFTP server's host key, to check on first connect")


class SftpPassword(SftpDetails):
    password: str = Field(description="shown once: only its argon2id hash is kept; it replaces the previous one")


@router.get("/ssh-keys", response_model=SshKeyList)
async def list_keys(user: UserDep, container: ContainerDep, limit: LimitQuery = 100,
                    cursor: CursorQuery = None) -> SshKeyList:
    """Your SSH public keys (newest first): any of them signs you in to your servers over SFTP."""
    rows, next_cursor = page_of(await run_in_threadpool(sftp.list_ssh_keys, container.app, user.id), limit, cursor)
    return SshKeyList(items=[SshKeyOut(**r) for r in rows], next_cursor=next_cursor)


@router.post("/ssh-keys", status_code=201, response_model=SshKeyOut)
async def add_key(body: NewSshKey, user: UserDep, container: ContainerDep) -> SshKeyOut:
    """Add a public key; not a key (or DSA, or RSA under 2048 bits): 422; already on your account: 409."""
    return SshKeyOut(**await run_in_threadpool(sftp.add_ssh_key, container.app, user.id, body.name, body.public_key))


@router.delete("/ssh-keys/{key_id}", status_code=204)
async def remove_key(key_id: UUID, user: UserDep, container: ContainerDep) -> Response:
    """Remove a key: it signs in nowhere from now on, and sessions it opened end within seconds."""
    await run_in_threadpool(sftp.remove_ssh_key, container.app, user.id, key_id)
    return Response(status_code=204)


@router.get("/instances/{instance_id}/sftp", response_model=SftpDetails)
async def details(instance_id: UUID, user: UserDep, grant: FilesReadGrant, container: ContainerDep) -> SftpDetails:
    """How to reach this server's files over SFTP (its owner, or a subuser with `files.read`)."""
    owner = grant.owner_id
    found = await run_in_threadpool(sftp.connection_details, container.app, None, user.id, owner, instance_id,
                                    container.sftp_endpoint())
    return SftpDetails(**found)


@router.post("/instances/{instance_id}/sftp/password", status_code=201, response_model=SftpPassword)
async def new_password(instance_id: UUID, user: UserDep, grant: FilesReadGrant, container: ContainerDep
                       ) -> SftpPassword:
    """A new SFTP password for you on this server, shown once; the previous one stops working at once."""
    owner = grant.owner_id
    password = await run_in_threadpool(sftp.set_sftp_password, container.app, user.id, owner, instance_id)
    found = await run_in_threadpool(sftp.connection_details, container.app, None, user.id, owner, instance_id,
                                    container.sftp_endpoint())
    return SftpPassword(**found, password=password)

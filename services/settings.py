"""Settings from the environment (`ZLH_*`), as CONTRACT.md lists them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from `90s`, `15m`, `3d`, `250ms` or a plain number of seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 15m, 3d or seconds)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB|kB|MB|GB|TB)?\s*$")
_UNIT_BYTES = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
               "kB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}


def parse_size(value: object) -> int:
    """Bytes from `512KiB`, `8MiB`, `10GiB` (or `kB`, `MB`, `GB`, powers of 1000) or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"not a size: {value!r} (use e.g. 512KiB, 8MiB, 10GiB or bytes)")
        size = int(match.group(1)) * _UNIT_BYTES[match.group(2)]
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


Size = Annotated[int, BeforeValidator(parse_size)]


def _empty_is_unset(value: object) -> object:
    """`VAR=` (as an env file copied from ops/zlh.env.example has it) means unset."""
    return None if value == "" else value


Unset = BeforeValidator(_empty_is_unset)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZLH_", extra="ignore")

    database_url: str = "sqlite:///var/zlh.sqlite3"
    redis_url: str | None = None
    #: Not in the contract: the prefix of every key ZLH keeps in Redis (the leader lock, rate limits), so that
    #: several installations (staging, production) can share one Redis.
    redis_key_prefix: str = Field(default="zlh", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    data_dir: str = "var"
    driver: Literal["local", "proxmox"] = "local"
    bootstrap_admin_token: str | None = Field(default=None, repr=False)
    stripe_webhook_secret: str | None = Field(default=None, repr=False)
    billing_final_warning_after: Duration = 3 * 86400.0
    billing_suspend_after: Duration = 7 * 86400.0
    controller_mode: Literal["dry-run", "live"] = "dry-run"
    controller_interval: Duration = 30.0
    operation_stale_after: Duration = 15 * 60.0
    local_step_delay: Duration = 0.0
    dns_zone: str = "play.zlh.localhost"
    dns: Literal["local", "cloudflare"] = "local"
    proxy: Literal["local", "velocity"] = "local"
    cloudflare_api_url: str = "https://api.cloudflare.com/client/v4"
    cloudflare_token: str | None = Field(default=None, repr=False)
    cloudflare_zone_id: str | None = None
    velocity_config: str | None = None
    velocity_reload_command: str | None = None
    #: The `proxmox` driver (README "Production: Proxmox"): API base URL, token id and secret, node names
    #: (comma-separated), storage, container template volume, VMID range, CA bundle, and the port of the
    #: `zlh agent` inside each container. Not in the contract: the bridge of `eth0`, and the deadlines of a
    #: Proxmox task and of a container's shutdown before it is stopped.
    proxmox_url: str | None = None
    proxmox_token_id: str | None = None
    proxmox_token_secret: str | None = Field(default=None, repr=False)
    proxmox_nodes: str | None = None
    proxmox_storage: str | None = None
    proxmox_template: str | None = None
    proxmox_vmid_range: str | None = None
    proxmox_ca_file: str | None = None
    proxmox_agent_port: int = Field(default=8100, ge=1, le=65535)
    proxmox_bridge: str = Field(default="vmbr0", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    #: Not in the contract: the resource pool new containers join (the token's privileges can be granted there).
    proxmox_pool: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    proxmox_task_timeout: Duration = Field(default=300.0, gt=0)
    proxmox_shutdown_timeout: Duration = Field(default=60.0, gt=0)
    #: What placement may allot on each Proxmox node (README "More than one host"): fixed settings, not the PVE
    #: API's figures (a node's RAM and root disk are not what ZLH may use; the storage may be shared). Unset: as
    #: much as the embedded `local` node (placement then only spreads the load). Read when a node is registered.
    proxmox_node_memory: Size = Field(default=1024**4, ge=1)
    proxmox_node_disk: Size = Field(default=1024**5, ge=1)
    proxmox_node_cpus: float = Field(default=1024.0, gt=0)
    #: The largest JSON request body (file uploads: 8 MiB; the Stripe webhook: 1 MiB); larger: 413 too_large.
    max_body: Size = Field(default=1024 * 1024, ge=1024)
    #: When set, `/metrics` (the API's and the controller's) requires `Authorization: Bearer` with the token in
    #: this file (read at each scrape, so rotating it needs no restart); unset: `/metrics` is open (bind it to
    #: 127.0.0.1 or a private interface, ops/monitoring.md).
    metrics_token_file: str | None = None
    #: A folder of extra templates (`NAME.toml`) beside the shipped ones; see services/infrastructure/templates.py.
    templates_dir: str | None = None
    #: Not in the contract: where a node keeps what templates install (once per node, shared by its
    #: instances) and its download caches. Unset: `ZLH_DATA_DIR/cache`.
    cache_dir: str | None = None
    discord_webhook_url: str | None = Field(default=None, repr=False)
    smtp_url: str | None = Field(default=None, repr=False)
    #: Not in the contract: the node agent. Unset URL = `zlh serve` starts one in-process (embedded mode).
    agent_url: str | None = None
    #: The per-node secret shared by the control plane and the agent. `zlh agent` refuses to start without it;
    #: in embedded mode a fresh random one is made at every start.
    agent_secret: str | None = Field(default=None, repr=False)
    #: Not in the contract: how long a state-changing route waits for its read models before answering anyway
    #: (with `ZLH-Read-Your-Writes: timeout` and a warning in the log).
    read_your_writes_timeout: Duration = 5.0
    #: Not in the contract: how long a provisioning step may wait for a server to accept connections.
    connect_timeout: Duration = 30.0
    #: Operations one provisioning process manager runs at once (CONTRACT.md): the launch posture is one at a
    #: time, so a failing node or template hurts one customer's operation, not four at once.
    provisioning_concurrency: int = Field(default=1, ge=1, le=64)
    #: Not in the contract: the controller's leader lease; a leader silent this long loses it.
    controller_lease: Duration = 15.0
    #: Limits and quotas (CONTRACT.md): requests a minute per token, failed authentications a minute per
    #: client address, and what one customer may hold.
    rate_limit_per_minute: int = Field(default=720, ge=1)
    auth_failures_per_minute: int = Field(default=20, ge=1)
    max_instances_per_user: int = Field(default=10, ge=0)
    max_backups_per_instance: int = Field(default=10, ge=0)
    max_tickets_per_day: int = Field(default=20, ge=0)
    #: The disk an instance's files may use (a template may set less), enforced by the node agent on every write:
    #: over it, 409 `quota_exceeded` and nothing written.
    instance_disk_quota: Size = Field(default=10 * 1024**3, ge=0)
    #: Not in the contract: how long one API process trusts what it read about a token (revocations and
    #: disables clear it at once in that process, and across processes as the log tells them); at most 2 s.
    auth_cache_ttl: Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=2)] = 2.0
    #: Not in the contract: the second key to Level 2 repairs (restart_instance, remove_orphan). Off by
    #: default; and no Level 2 kind is in the code allow-list, so today they are proposed and recorded only.
    controller_level2: bool = False
    #: Not in the contract: a schedule's due time that passed while no schedules worker ran is still run (once, at
    #: start-up) when it is at most this old; older ones are recorded as `missed`.
    schedule_grace: Duration = Field(default=300.0, ge=1.0)
    #: The support desk (README "Support desk"): the domain of every ticket email's Reply-To
    #: (`support+NUMBER@ZLH_SUPPORT_DOMAIN`), and where replies come back in: an SMTP listener of ours
    #: (`host:port`, behind the operator's MX) and/or an IMAP mailbox the service polls
    #: (`imap[s]://user:pass@host[:port]/MAILBOX`, every `ZLH_INBOUND_IMAP_INTERVAL`).
    support_domain: str = Field(default="zlh.localhost", pattern=r"^[A-Za-z0-9.-]{1,253}$")
    inbound_smtp: str | None = Field(default=None, pattern=r"^\[?[A-Za-z0-9.:_-]*\]?:\d{1,5}$")
    inbound_imap_url: str | None = Field(default=None, repr=False)
    inbound_imap_interval: Duration = Field(default=30.0, ge=0.05)
    #: A helpdesk mirrored both ways (README "Helpdesk sync"): `zammad` (FreeScout is not built yet), its base
    #: URL and API token, the group new tickets go to, and how often its changes are read.
    helpdesk: Literal["freescout", "zammad"] | None = None
    helpdesk_url: str | None = None
    helpdesk_token: str | None = Field(default=None, repr=False)
    helpdesk_group: str = "Users"
    helpdesk_interval: Duration = Field(default=30.0, ge=0.05)
    #: More than one host (README "More than one host"): how often the node monitor probes each node's agent,
    #: how long a node may stay silent before it is `unreachable`, and the key that encrypts stored agent
    #: secrets (a Fernet key; unset: `ZLH_DATA_DIR/node-secrets.key`, made on first use, mode 0600).
    node_probe_interval: Duration = Field(default=5.0, ge=0.05)
    node_unreachable_after: Duration = Field(default=30.0, ge=0.1)
    node_secret_key: str | None = Field(default=None, repr=False)
    node_secret_key_file: str | None = None
    #: The embedded `local` node's capacity and ports (`auto`: its agent picks any free port, as before nodes).
    local_node_memory: Size = Field(default=1024**4, ge=1)
    local_node_disk: Size = Field(default=1024**5, ge=1)
    local_node_cpus: float = Field(default=1024.0, gt=0)
    local_node_ports: str = "auto"
    local_node_public_host: str = "127.0.0.1"
    #: Offsite backups (README "Offsite backups"): when `ZLH_BACKUP_S3_BUCKET` is set, backup archives go to this
    #: S3-compatible bucket (the node uploads them over presigned URLs; it never holds these credentials).
    #: Unset endpoint: AWS's own. The secret from `..._SECRET_KEY` or, better, a file (`..._SECRET_KEY_FILE`).
    backup_s3_endpoint: Annotated[str | None, Unset] = Field(default=None, pattern=r"^https?://")
    backup_s3_bucket: Annotated[str | None, Unset] = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
    backup_s3_region: str = Field(default="us-east-1", pattern=r"^[A-Za-z0-9-]{1,64}$")
    backup_s3_access_key: str | None = Field(default=None, repr=False)
    backup_s3_secret_key: str | None = Field(default=None, repr=False)
    backup_s3_secret_key_file: Annotated[str | None, Unset] = None
    #: Every key ZLH writes starts with this (`PREFIX/backups/...`, `PREFIX/attachments/...`).
    backup_s3_prefix: str = Field(default="zlh", pattern=r"^[A-Za-z0-9._/-]{0,200}$")
    #: The multipart upload's part size (S3: 5 MiB to 5 GiB; grown when an archive would need over 10,000 parts).
    backup_s3_part_size: Size = Field(default=64 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)
    #: How long a presigned URL handed to a node stays valid: the longest an upload or a download may take.
    backup_s3_url_ttl: Annotated[float, BeforeValidator(parse_duration), Field(ge=60, le=7 * 86400)] = 6 * 3600.0
    #: Automatic (scheduled) backups kept per server; older ones are pruned after each backup. Unset: all
    #: (up to ZLH_MAX_BACKUPS_PER_INSTANCE). Backups a person made are never pruned.
    backup_retention: Annotated[int | None, Unset] = Field(default=None, ge=1)
    #: Where support attachments and received mail are kept: `local` (ZLH_DATA_DIR/attachments) or `s3` (the
    #: backup bucket, under PREFIX/attachments/; those kept locally before the switch are still read).
    attachments_store: Literal["local", "s3"] = "local"
    #: SFTP (README "SFTP"): where the SFTP server listens (`host:port`, port 0 = any free one; `off`: not at
    #: all), its host key (an OpenSSH private key file, made 0600 at the first start if missing; unset:
    #: `ZLH_DATA_DIR/sftp_host_ed25519_key`), and the host and port customers are told to connect to (unset: the
    #: listening ones).
    sftp_listen: str = Field(default="127.0.0.1:2022", pattern=r"^(off|\[?[A-Za-z0-9.:_-]*\]?:\d{1,5})$")
    sftp_host_key: str | None = None
    sftp_public_host: str | None = None
    sftp_public_port: int | None = Field(default=None, ge=1, le=65535)

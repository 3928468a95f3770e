"""The one place that turns settings into wired components, and runs the workers.

`Container.start(workers=...)` runs the chosen process managers as threads of this
process: that is the embedded mode of `zlh serve` and also what each
`zlh worker NAME` process does with a single worker.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain.billing import Schedule
from projections.registry import all_projections
from services.access import AccessGate, Authenticator, TokenInvalidator
from services.console import ConsoleTickets
from services.edge import Edge
from services.infrastructure import dead_letters
from services.infrastructure.blobs import BlobStore
from services.infrastructure.database import DatabaseURL, ReadModelDB, ensure_sqlite_file
from services.infrastructure.files import atomic_write_text
from services.infrastructure.heartbeats import HeartbeatWriter, heartbeat_every
from services.infrastructure.leader import LeaderLock, build_lock
from services.infrastructure.log_following import read_positions
from services.infrastructure.projection_runner import ProjectionGroup, ProjectionRunner
from services.infrastructure.rate_limits import build_windows
from services.infrastructure.store import ZLH, LogSignal, PostgresListener, store_env
from services.infrastructure.templates import TemplateCatalogue
from services.infrastructure.token_usage import UsageRecorder
from services.infrastructure.watcher import PositionWatcher
from services.ports import DnsProvider, InstanceDriver, ObjectStore, ProxyRegistry
from services.quotas import Quotas
from services.settings import Settings
from services.workers.billing import BillingManager
from services.workers.controller import Controller
from services.workers.mail import MailWorker
from services.workers.notifications import NotificationsManager
from services.workers.provisioning import ProvisioningManager
from services.workers.repair import RepairWorker
from services.workers.schedules import ScheduleManager

log = logging.getLogger(__name__)

WORKERS = ("projections", "provisioning", "notifications", "repair", "billing", "schedules", "mail", "helpdesk",
           "nodes")
#: The log positions (and dead-letter names) of the process managers.
PROCESS_MANAGERS = ("provisioning", "notifications", "repair", "billing_enforcement", "scheduler", "helpdesk")


def build_driver(settings: Settings) -> tuple[InstanceDriver, Callable[[], None]]:
    """The driver the control plane uses, and how to shut it down.

    The control plane never touches instance files or processes itself: it talks to
    a node agent. With `ZLH_AGENT_URL` set, that is a separate `zlh agent`; unset,
    an agent is started in this process on a free loopback port with a fresh secret.
    """
    if settings.driver == "proxmox":
        from services.adapters.proxmox_driver import ProxmoxDriver

        proxmox = ProxmoxDriver(proxmox_config(settings))
        return proxmox, proxmox.close
    from services.adapters.agent_client import AgentDriver

    data_dir = Path(settings.data_dir)
    if settings.agent_url:
        if not settings.agent_secret:
            raise ValueError("ZLH_AGENT_URL is set but ZLH_AGENT_SECRET is not")
        return AgentDriver(settings.agent_url, settings.agent_secret, disk_quota=settings.instance_disk_quota), \
            lambda: None
    from services.agent.driver import LocalDriver
    from services.agent.server import start_agent_in_thread

    secret = secrets.token_urlsafe(32)
    url, stop = start_agent_in_thread(LocalDriver(data_dir, cache_dir=settings.cache_dir,
                                                  disk_quota=settings.instance_disk_quota), secret)
    return AgentDriver(url, secret, disk_quota=settings.instance_disk_quota), stop


class MissingSettingError(ValueError):
    """A setting the configuration needs is not set: the message names it, in a sentence."""


def build_offsite(settings: Settings) -> ObjectStore | None:
    """The S3-compatible bucket of `ZLH_BACKUP_S3_*`, or None (backups stay on their node's disk)."""
    if not settings.backup_s3_bucket:
        if settings.backup_s3_endpoint or settings.attachments_store == "s3":
            raise MissingSettingError("offsite storage (ZLH_BACKUP_S3_ENDPOINT or ZLH_ATTACHMENTS_STORE=s3) needs "
                                      "ZLH_BACKUP_S3_BUCKET; it is not set")
        return None
    from services.adapters.s3_objects import S3ObjectStore

    secret = settings.backup_s3_secret_key
    if settings.backup_s3_secret_key_file:
        try:
            secret = Path(settings.backup_s3_secret_key_file).read_text().strip()
        except OSError as exc:
            raise MissingSettingError(f"ZLH_BACKUP_S3_SECRET_KEY_FILE cannot be read: {exc.strerror}") from exc
    return S3ObjectStore(settings.backup_s3_bucket, endpoint_url=settings.backup_s3_endpoint,
                         region=settings.backup_s3_region, access_key=settings.backup_s3_access_key,
                         secret_key=secret, prefix=settings.backup_s3_prefix,
                         part_size=settings.backup_s3_part_size, url_ttl=settings.backup_s3_url_ttl)


def build_blobs(settings: Settings, offsite: ObjectStore | None) -> BlobStore:
    """Support attachments and received mail: under ZLH_DATA_DIR/attachments, or in the bucket (reading
    the local ones still, those kept before the switch)."""
    local = Path(settings.data_dir) / "attachments"
    if settings.attachments_store == "s3" and offsite is not None:
        from services.adapters.s3_objects import S3ObjectStore
        from services.infrastructure.blobs import LocalObjectStore

        assert isinstance(offsite, S3ObjectStore)
        attachments = S3ObjectStore.under(offsite, "attachments")
        return BlobStore(store=attachments, fallback=LocalObjectStore(local))
    return BlobStore(local)


#: What `ZLH_DRIVER=proxmox` cannot do without.
PROXMOX_REQUIRED = ("proxmox_url", "proxmox_token_id", "proxmox_token_secret", "proxmox_nodes", "proxmox_storage",
                    "proxmox_template", "proxmox_vmid_range", "proxmox_ca_file", "agent_secret")


def proxmox_config(settings: Settings) -> Any:
    """The proxmox driver's configuration; `MissingSettingError` naming the first setting it lacks.

    `ZLH_PROXMOX_CA_FILE` is required too: the API's certificate is verified against it (a Proxmox
    node's own certificate is signed by the cluster's CA, `/etc/pve/pve-root-ca.pem`).
    """
    from services.adapters.proxmox_driver import ProxmoxConfig, parse_vmid_range

    for name in PROXMOX_REQUIRED:
        if not getattr(settings, name):
            raise MissingSettingError(f"ZLH_DRIVER=proxmox needs ZLH_{name.upper()}; it is not set")
    ca_file = settings.proxmox_ca_file or ""
    if not Path(ca_file).is_file():
        raise MissingSettingError(f"ZLH_PROXMOX_CA_FILE names {ca_file}, which is not a readable file")
    nodes = tuple(n.strip() for n in (settings.proxmox_nodes or "").split(",") if n.strip())
    if not nodes:
        raise MissingSettingError("ZLH_DRIVER=proxmox needs ZLH_PROXMOX_NODES (comma-separated node names)")
    try:
        vmid_range = parse_vmid_range(settings.proxmox_vmid_range or "")
    except ValueError as exc:
        raise MissingSettingError(str(exc)) from exc
    return ProxmoxConfig(
        url=settings.proxmox_url or "", token_id=settings.proxmox_token_id or "",
        token_secret=settings.proxmox_token_secret or "", nodes=nodes, storage=settings.proxmox_storage or "",
        template=settings.proxmox_template or "", vmid_range=vmid_range, agent_secret=settings.agent_secret or "",
        ca_file=ca_file, agent_port=settings.proxmox_agent_port, bridge=settings.proxmox_bridge,
        pool=settings.proxmox_pool,
        task_timeout=settings.proxmox_task_timeout, shutdown_timeout=settings.proxmox_shutdown_timeout,
    )


def build_edge(settings: Settings) -> Edge:
    """DNS (`ZLH_DNS`: local file or Cloudflare) and the proxy (`ZLH_PROXY`: local file or Velocity)."""
    from services.adapters.edge_files import LocalEdge

    local = LocalEdge(Path(settings.data_dir) / "edge")
    dns: DnsProvider = local
    proxy: ProxyRegistry = local
    if settings.dns == "cloudflare":
        from services.adapters.cloudflare_dns import CloudflareDns

        for name in ("cloudflare_token", "cloudflare_zone_id"):
            if not getattr(settings, name):
                raise MissingSettingError(f"ZLH_DNS=cloudflare needs ZLH_{name.upper()}; it is not set")
        dns = CloudflareDns(token=settings.cloudflare_token or "", zone_id=settings.cloudflare_zone_id or "",
                            zone_name=settings.dns_zone, api_url=settings.cloudflare_api_url)
    if settings.proxy == "velocity":
        from services.adapters.velocity import VelocityProxy

        for name in ("velocity_config", "velocity_reload_command"):
            if not getattr(settings, name):
                raise MissingSettingError(f"ZLH_PROXY=velocity needs ZLH_{name.upper()}; it is not set")
        proxy = VelocityProxy(settings.velocity_config or "", settings.velocity_reload_command)
    return Edge(dns, proxy, settings.dns_zone)


def build_channels(settings: Settings) -> tuple[Any, Any]:
    """Customer email over SMTP and staff alerts to Discord; unset = recorded as not sent."""
    from services.adapters.discord import DiscordAlertChannel
    from services.adapters.smtp import SmtpEmailChannel

    return SmtpEmailChannel(settings.smtp_url), DiscordAlertChannel(settings.discord_webhook_url)


@dataclass
class Container:
    settings: Settings
    url: DatabaseURL
    app: ZLH
    db: ReadModelDB
    given_driver: InstanceDriver | None
    edge: Edge
    runners: dict[str, ProjectionRunner]
    watcher: PositionWatcher
    stop_event: threading.Event
    templates: TemplateCatalogue
    access: AccessGate
    quotas: Quotas
    provisioning: ProvisioningManager | None = None
    notifications: NotificationsManager | None = None
    repair: RepairWorker | None = None
    billing: BillingManager | None = None
    schedules: ScheduleManager | None = None
    mail: MailWorker | None = None
    helpdesk: Any = None
    sftp: Any = None  # services.workers.sftp.SftpServer, once start_sftp() ran
    controller: Controller | None = None
    channels: tuple[Any, Any] | None = None
    console_tickets: ConsoleTickets = field(default_factory=ConsoleTickets)
    _driver_stop: Callable[[], None] | None = None
    #: More than one host: the router over the nodes' drivers, and how a node's driver is made (tests give fakes).
    router: Any = None
    node_driver_factory: Callable[[str, str], InstanceDriver] | None = None
    node_monitor: Any = None
    _nodes_position: int = 0  # where the Proxmox nodes registered at this start are in the log
    _secret_box: Any = None
    _driver_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Offsite backups (ZLH_BACKUP_S3_*): None keeps them on their node's disk.
    offsite: ObjectStore | None = None
    _blobs: BlobStore | None = None

    @property
    def blobs(self) -> BlobStore:
        """Attachments and received mail, content-addressed: under ZLH_DATA_DIR/attachments or in S3."""
        with self._driver_lock:
            if self._blobs is None:
                self._blobs = build_blobs(self.settings, self.offsite)
            return self._blobs

    @property
    def driver(self) -> InstanceDriver:
        """Built on first use, so commands that never touch instances start no agent.

        It is the `NodeRouter` (README "More than one host"): each call goes to the agent of the instance's
        node; the `local` node's agent is the built (or given) driver.
        """
        with self._driver_lock:
            if self.given_driver is None:
                self.given_driver, self._driver_stop = build_driver(self.settings)
            if self.router is None:
                from services.adapters.node_router import NodeRouter, agent_driver

                self.router = NodeRouter(self.app, self.db, self.secret_box, self.given_driver,
                                         self.node_driver_factory or agent_driver)
                bind = getattr(self.given_driver, "bind_placement", None)
                if self.settings.driver == "proxmox" and bind is not None:
                    bind(self.router.proxmox_node_of)  # containers go where `place` put their instance
            return self.router  # type: ignore[return-value]

    @property
    def secret_box(self) -> Any:
        """What encrypts the node agents' secrets in the log (ZLH_NODE_SECRET_KEY or its key file)."""
        from services.infrastructure.secret_box import SecretBox

        if self._secret_box is None:
            s = self.settings
            self._secret_box = SecretBox.from_settings(s.node_secret_key, s.node_secret_key_file, s.data_dir)
        return self._secret_box

    def ensure_local_node(self) -> None:
        """The embedded default node, `local` (idempotent; `ZLH_LOCAL_NODE_*` set its capacity and ports); with
        `ZLH_DRIVER=proxmox`, the `ZLH_PROXMOX_NODES` instead (`services.nodes.ensure_proxmox_nodes`)."""
        from services.nodes import ensure_local_node

        s = self.settings
        if s.driver == "proxmox":
            from services.nodes import ensure_proxmox_nodes

            pve = [n.strip() for n in (s.proxmox_nodes or "").split(",") if n.strip()]
            self._nodes_position = ensure_proxmox_nodes(self.app, pve, s.proxmox_node_memory // (1024 * 1024),
                                                        s.proxmox_node_disk // (1024 * 1024), s.proxmox_node_cpus)
            return
        ensure_local_node(self.app, s.local_node_memory // (1024 * 1024), s.local_node_disk // (1024 * 1024),
                          s.local_node_cpus, s.local_node_ports, s.local_node_public_host)
    threads: list[threading.Thread] = field(default_factory=list)
    started: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, settings: Settings, driver: InstanceDriver | None = None, pool_size: int = 8,
              edge: Edge | None = None) -> Container:
        """Wire everything `settings` asks for; a given `driver` or `edge` (tests, fakes) replaces the built one."""
        url = DatabaseURL.parse(settings.database_url)
        templates = TemplateCatalogue.load(settings.templates_dir)
        ensure_sqlite_file(url)
        if settings.driver == "proxmox" and driver is None:
            proxmox_config(settings)  # refuse to start without a setting the driver needs, naming it
        edge = edge or build_edge(settings)
        signal = LogSignal()
        app = ZLH(env=store_env(url, pool_size=pool_size), signal=signal)
        db = ReadModelDB(url, pool_size=pool_size)
        stop = threading.Event()
        watcher = PositionWatcher(db, stop)
        projections = all_projections(Path(settings.data_dir), atomic_write_text)
        runners = {p.name: ProjectionRunner(app, db, p, on_commit=watcher.poke) for p in projections}
        access = AccessGate(Authenticator(app, db, settings.auth_cache_ttl), build_windows(settings.redis_url),
                            UsageRecorder(db), settings.rate_limit_per_minute, settings.auth_failures_per_minute)
        quotas = Quotas(settings.max_instances_per_user, settings.max_backups_per_instance,
                        settings.max_tickets_per_day, db)
        offsite = build_offsite(settings)
        return cls(settings, url, app, db, driver, edge, runners, watcher, stop, templates, access, quotas,
                   offsite=offsite)

    # Workers.

    def start(self, workers: tuple[str, ...] = WORKERS) -> None:
        unknown = set(workers) - set(WORKERS)
        if unknown:
            raise ValueError(f"unknown workers: {sorted(unknown)}; available: {list(WORKERS)}")
        self._listen()
        self.ensure_local_node()
        if "projections" in workers:
            group = ProjectionGroup(list(self.runners.values()), self.app, self.db, on_commit=self.watcher.advanced)
            self.watcher.follow_locally()
            self._spawn("projections", group.run, self.stop_event, self.app.signal)
        if "provisioning" in workers and self._nodes_position:
            # placement lists nodes from the read model: the Proxmox nodes just registered must be in it first
            self.wait_for_projections(self._nodes_position, ("nodes",))
        if "provisioning" in workers:
            self.provisioning = ProvisioningManager(
                self.app, self.db, self.driver, self.edge,
                worker_id=f"{socket.gethostname()}:{os.getpid()}:{id(self):x}",
                step_delay=self.settings.local_step_delay,
                connect_timeout=self.settings.connect_timeout,
                concurrency=self.settings.provisioning_concurrency,
                templates=self.templates,
                offsite=self.offsite,
                retention=self.settings.backup_retention,
            )
            self._spawn("provisioning", self.provisioning.run, self.app.signal)
            beats = HeartbeatWriter(self.db, self.provisioning.worker_id, self.provisioning.active_operations,
                                    every=heartbeat_every(self.settings.operation_stale_after))
            self._spawn("heartbeats", beats.run, self.stop_event)
        if "notifications" in workers:
            email, alerts = self.channels or build_channels(self.settings)
            self.notifications = NotificationsManager(self.app, self.db, email, alerts,
                                                      support_domain=self.settings.support_domain)
            self._spawn("notifications", self.notifications.run, self.app.signal)
        if "repair" in workers:
            self.repair = RepairWorker(self.app, self.db, self.driver, self.edge, worker_id=self.worker_id("repair"),
                                       stale_after=self.settings.operation_stale_after,
                                       level2=self.settings.controller_level2)
            self._spawn("repair", self.repair.run, self.app.signal)
        if "billing" in workers:
            self.billing = BillingManager(self.app, self.db, self.schedule)
            self._spawn("billing", self.billing.run, self.app.signal)
        if "schedules" in workers:
            self.schedules = ScheduleManager(self.app, self.db, self.driver, grace=self.settings.schedule_grace,
                                             quotas=self.quotas)
            self._spawn("schedules", self.schedules.run, self.app.signal)
        if "mail" in workers:
            s = self.settings
            self.mail = MailWorker(self.app, self.blobs, s.support_domain, s.inbound_smtp, s.inbound_imap_url,
                                   s.inbound_imap_interval)
            self.mail.start()
        if "nodes" in workers:
            from services.workers.node_monitor import NodeMonitor

            self.node_monitor = NodeMonitor(self.app, self.db, self.driver, self.settings.node_probe_interval,
                                            self.settings.node_unreachable_after)
            self._spawn("nodes", self.node_monitor.run, self.stop_event)
        if "helpdesk" in workers and self.settings.helpdesk:
            from services.workers.helpdesk import build_helpdesk_sync

            self.helpdesk = build_helpdesk_sync(self.app, self.db, self.settings, blobs=self.blobs)
            self._spawn("helpdesk", self.helpdesk.run, self.app.signal)
        self.started |= set(workers)

    @property
    def schedule(self) -> Schedule:
        """The billing enforcement timers (ZLH_BILLING_FINAL_WARNING_AFTER, ZLH_BILLING_SUSPEND_AFTER)."""
        return Schedule.of(self.settings.billing_final_warning_after, self.settings.billing_suspend_after)

    def worker_id(self, role: str) -> str:
        return f"{role}:{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    def start_controller(self, lock: LeaderLock | None = None) -> Controller:
        """Run the reconciler in a thread of this process; it acts only while it holds the leader lease."""
        s = self.settings
        lock = lock or build_lock(s.redis_url, s.controller_lease, s.redis_key_prefix)
        self.controller = Controller(
            self.app, self.db, self.driver, self.edge, lock,
            mode=s.controller_mode, interval=s.controller_interval, stale_after=s.operation_stale_after,
            zone=s.dns_zone, holder=self.worker_id("controller"), level2=s.controller_level2,
        )
        self._spawn("controller", self.controller.run)
        return self.controller

    def start_sftp(self) -> tuple[str, int] | None:
        """Run the SFTP server on its own event loop in a thread of this process (`ZLH_SFTP_LISTEN`; `off`:
        not at all); the bound (host, port)."""
        from services.workers.sftp import SftpContext, SftpServer

        if self.settings.sftp_listen == "off" or self.sftp is not None:
            return None if self.sftp is None else (self.sftp.host, self.sftp.port)
        context = SftpContext(self.app, self.db, lambda: self.driver, self.access.windows,
                              self.settings.auth_failures_per_minute)
        server = SftpServer(context, self.sftp_host_key_path, self.settings.sftp_listen)
        bound = server.start_in_thread()
        self.sftp = server
        return bound

    @property
    def sftp_host_key_path(self) -> Path:
        return Path(self.settings.sftp_host_key or Path(self.settings.data_dir) / "sftp_host_ed25519_key")

    def sftp_endpoint(self) -> Any:
        """Where customers connect (services.sftp.Endpoint): ZLH_SFTP_PUBLIC_HOST/PORT, else what this process
        listens on, else ZLH_SFTP_LISTEN."""
        from services.sftp import Endpoint
        from services.workers.sftp import host_key_fingerprint, split_address

        s = self.settings
        host, port = split_address(s.sftp_listen) if s.sftp_listen != "off" else ("localhost", 2022)
        if self.sftp is not None:
            host, port = self.sftp.host, self.sftp.port
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        return Endpoint(s.sftp_public_host or host, s.sftp_public_port or port,
                        host_key_fingerprint(self.sftp_host_key_path))

    def start_api(self) -> None:
        """What an API process runs beside its routes (once): recording when tokens were last used, and
        following the log for revocations and disables made by any process, to clear its token cache."""
        if "api" in self.started:
            return
        self.started.add("api")
        self._listen()
        self.ensure_local_node()
        self.access.usage.start()
        invalidator = TokenInvalidator(self.app, self.access.authenticator,
                                       lambda position: self.wait_for_projections(position, ("tokens",)))
        self._spawn("token-invalidation", invalidator.run, self.stop_event, self.app.signal)

    def _listen(self) -> None:
        """Relay the other processes' appends (PostgreSQL NOTIFY) to this process's followers, once."""
        if self.url.dialect == "postgres" and "listen" not in self.started:
            self.started.add("listen")
            self._thread(PostgresListener(self.url, self.app.signal, self.stop_event))

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        self._thread(threading.Thread(target=target, args=args, name=f"zlh-{name}", daemon=True))

    def _thread(self, thread: threading.Thread) -> None:
        thread.start()
        self.threads.append(thread)

    def stop_worker(self, name: str) -> None:
        """Stop one process manager's thread of this process and wait until it has stopped."""
        worker = {"notifications": self.notifications, "repair": self.repair, "billing": self.billing,
                  "schedules": self.schedules, "helpdesk": self.helpdesk}[name]
        assert worker is not None, f"{name} is not running in this process"
        worker.stop_event.set()
        self.app.signal.notify()
        for thread in self.threads:
            if thread.name == f"zlh-{name}":
                thread.join(timeout=10)
                assert not thread.is_alive(), f"{name} did not stop"

    def close(self) -> None:
        self.stop_event.set()
        if self.provisioning is not None:
            self.provisioning.stop(wait=True)
        if self.notifications is not None:
            self.notifications.stop_event.set()
        if self.repair is not None:
            self.repair.stop_event.set()
        if self.billing is not None:
            self.billing.stop_event.set()
        if self.schedules is not None:
            self.schedules.stop_event.set()
        if self.mail is not None:
            self.mail.stop()
        if self.helpdesk is not None:
            self.helpdesk.stop_event.set()
        if self.controller is not None:
            self.controller.stop()
        if self.sftp is not None:
            self.sftp.stop()
        self.app.signal.notify()
        for thread in self.threads:
            thread.join(timeout=5)
        self.watcher.close()
        if self.helpdesk is not None:
            self.helpdesk.client.close()
        self.access.usage.close()
        self.access.windows.close()
        if self.router is not None:
            self.router.close()
        if self._driver_stop is not None:
            self._driver_stop()
        if self.controller is not None:
            self.controller.lock.close()
        self.app.close()
        self.db.close()

    # Read-your-writes.

    def wait_for_projections(self, position: int, names: tuple[str, ...], timeout: float | None = None) -> bool:
        """Block until the named projections have applied `position`; False (and a warning) on timeout.

        `timeout` defaults to `ZLH_READ_YOUR_WRITES_TIMEOUT`.
        """
        timeout = self.settings.read_your_writes_timeout if timeout is None else timeout
        unknown = set(names) - set(self.runners)
        if unknown or not names:
            raise ValueError(f"wait for which read models? unknown: {sorted(unknown)}")
        if position <= 0 or self.watcher.wait(position, names, timeout):
            return True
        lagging = {n: p for n, p in read_positions(self.db).items() if n in names and p < position}
        log.warning("read-your-writes timed out after %.1fs waiting for position %d; lagging: %s",
                    timeout, position, lagging)
        return False

    def projection_status(self) -> list[dict[str, Any]]:
        head = self.app.head()
        positions = read_positions(self.db)
        letters = dead_letters.unresolved(self.db)
        items = []
        for name, runner in self.runners.items():
            position = positions.get(name, 0)
            items.append({"name": name, "position": position, "head": head, "lag": max(head - position, 0),
                          "rebuild": runner.progress.as_dict(),
                          "dead_letters": [d for d in letters if d["follower"] == name]})
        return items

    def retry_dead_letters(self, name: str) -> str:
        """Apply a follower's dead letters again: a read model by a rebuild, a process manager by its workers.

        Returns what was done: `rebuilt` (a read model, synchronously) or `requested` (the running workers of
        that process manager pick the request up as soon as they have caught up). Unknown name: KeyError.
        """
        if name in self.runners:
            self.runners[name].rebuild()
            return "rebuilt"
        if name not in PROCESS_MANAGERS:
            raise KeyError(name)
        dead_letters.request_retry(self.db, name)
        return "requested"

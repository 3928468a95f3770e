"""The `zlh` command line, as CONTRACT.md lists it."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from services.infrastructure.database import DatabaseURL

cli = typer.Typer(help="ZLH control plane.", no_args_is_help=True, add_completion=False)
users_cli = typer.Typer(help="Manage users.", no_args_is_help=True)
projections_cli = typer.Typer(help="Inspect and rebuild read models.", no_args_is_help=True)
audit_cli = typer.Typer(help="Read the log as an auditor.", no_args_is_help=True)
cli.add_typer(users_cli, name="users")
cli.add_typer(projections_cli, name="projections")
cli.add_typer(audit_cli, name="audit")
nodes_cli = typer.Typer(help="The hosts servers run on (README \"More than one host\").", no_args_is_help=True)
cli.add_typer(nodes_cli, name="nodes")

log = logging.getLogger("zlh")


def _settings():  # type: ignore[no-untyped-def]
    from services.settings import Settings

    try:
        return Settings()
    except Exception as exc:
        typer.echo(f"zlh: bad configuration: {exc}", err=True)
        raise typer.Exit(2) from exc


def _container(settings=None):  # type: ignore[no-untyped-def]
    from domain.templates import TemplateError
    from services.bootstrap import Container, MissingSettingError

    try:
        return Container.build(settings or _settings())
    except TemplateError as exc:
        typer.echo(f"zlh: bad template: {exc}", err=True)
        raise typer.Exit(2) from exc
    except MissingSettingError as exc:
        typer.echo(f"zlh: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc


def _setup_logging() -> None:
    from services.infrastructure.logs import configure

    configure(logging.INFO)


@cli.command()
def migrate() -> None:
    """Create or upgrade every table: numbered steps once each, read models rebuilt when their version changed.

    Idempotent and safe to run concurrently (an advisory lock on PostgreSQL, a file lock on SQLite).
    """
    from services.infrastructure.migrations import migrate as run_migrate

    for line in run_migrate(DatabaseURL.parse(_settings().database_url)):
        typer.echo(line)
    typer.echo("migrated")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    no_workers: Annotated[bool, typer.Option("--no-workers", help="Serve the API only.")] = False,
) -> None:
    """Serve the API; by default also every worker in-process (the embedded mode)."""
    import uvicorn

    from api.app import create_app
    from services.infrastructure.migrations import migrate as run_migrate

    _setup_logging()
    settings = _settings()
    if not no_workers:
        run_migrate(DatabaseURL.parse(settings.database_url))
    container = _container(settings)
    first_token = _bootstrap(container, settings)
    sftp_line = "SFTP:      off (ZLH_SFTP_LISTEN=off)"
    if not no_workers:
        container.start()
        container.start_controller()
        sftp_line = _start_sftp(container)
    base = f"http://{host}:{port}"
    typer.echo(
        f"\nZLH control plane on {base}  (database: {container.url.dialect}, "
        f"workers: {'none' if no_workers else 'all in-process'}, "
        f"controller: {'off' if no_workers else settings.controller_mode})\n"
        f"  API docs:  {base}/docs   OpenAPI: {base}/openapi.json\n"
        f"  {first_token}\n"
        f"  {sftp_line}\n"
        f"  Try:       curl -H 'Authorization: Bearer TOKEN' {base}/api/me\n"
    )
    try:
        uvicorn.run(create_app(container), host=host, port=port, log_level="info", log_config=None)
    finally:
        container.close()


def _start_sftp(container) -> str:  # type: ignore[no-untyped-def]
    """Start the embedded SFTP server; a port already taken is logged, and the API serves on without it."""
    if container.settings.sftp_listen == "off":
        return "SFTP:      off (ZLH_SFTP_LISTEN=off)"
    try:
        host, port = container.start_sftp()
    except OSError as exc:
        log.error("sftp: cannot listen on %s (%s); serving without SFTP", container.settings.sftp_listen, exc)
        return f"SFTP:      NOT STARTED: cannot listen on {container.settings.sftp_listen} ({exc.strerror})"
    return f"SFTP:      sftp -P {port} EMAIL.SHORTID@{host}  (GET /api/instances/ID/sftp tells each server's)"


@cli.command()
def sftp(
    listen: Annotated[str | None, typer.Option(help="host:port to listen on (default: ZLH_SFTP_LISTEN).")] = None,
) -> None:
    """The SFTP server alone (its own systemd unit): each server's files, until SIGTERM."""
    _setup_logging()
    settings = _settings()
    if listen is not None:
        settings = settings.model_copy(update={"sftp_listen": listen})
    if settings.sftp_listen == "off":
        typer.echo("zlh: ZLH_SFTP_LISTEN is off; nothing to serve", err=True)
        raise typer.Exit(2)
    container = _container(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        host, port = container.start_sftp()
    except OSError as exc:
        typer.echo(f"zlh: cannot listen on {settings.sftp_listen}: {exc}", err=True)
        container.close()
        raise typer.Exit(1) from exc
    typer.echo(f"zlh sftp listening on {host}:{port}", err=True)
    stop.wait()
    container.close()


def _bootstrap(container, settings) -> str:  # type: ignore[no-untyped-def]
    """Make sure an admin can sign in; return a line telling the operator how.

    With `ZLH_BOOTSTRAP_ADMIN_TOKEN`, that token is the bootstrap admin's, and a new value revokes the
    previous one. Without it, a token is generated once, into `ZLH_DATA_DIR/initial-admin-token` (created
    0600), and printed only then; later starts say where it is.
    """
    from domain.errors import DomainError
    from services.infrastructure.files import create_private_file
    from services.users import ensure_admin_token, ensure_bootstrap_admin, new_token

    if settings.bootstrap_admin_token:
        try:
            bootstrapped = ensure_bootstrap_admin(container.app, settings.bootstrap_admin_token)
        except DomainError as exc:
            log.error("ZLH_BOOTSTRAP_ADMIN_TOKEN: %s", exc.message)
            return f"Admin token: NOT ACCEPTED: {exc.message}"
        revoked = " (the previous bootstrap token is revoked)" if bootstrapped.revoked else ""
        return f"Admin token: the value of ZLH_BOOTSTRAP_ADMIN_TOKEN{revoked}"
    token_file = Path(settings.data_dir) / "initial-admin-token"
    token = new_token()
    made = create_private_file(token_file, token + "\n")
    if not made:
        token = token_file.read_text().strip()
    credential = ensure_admin_token(container.app, token)
    if credential.revoked:
        return (f"Admin token: the one in {token_file} was revoked; delete that file and restart to make a new "
                "one (or set ZLH_BOOTSTRAP_ADMIN_TOKEN)")
    if made:
        return (f"Admin token: {token}  (shown once; also kept in {token_file}, readable by you only; "
                "more users: zlh users create EMAIL [--admin])")
    return f"Admin token: kept in {token_file} (made at the first start; more users: zlh users create EMAIL [--admin])"


@cli.command()
def worker(
    name: Annotated[str, typer.Argument(help="provisioning | repair | billing | notifications | projections | "
                                              "schedules | mail | helpdesk | nodes")],
) -> None:
    """Run one process manager until SIGTERM."""
    from services.bootstrap import WORKERS

    if name not in WORKERS:
        typer.echo(f"zlh: no worker named {name!r}; available: {', '.join(WORKERS)}", err=True)
        raise typer.Exit(2)
    _setup_logging()
    container = _container()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    container.start((name,))
    log.info("worker %s running", name)
    stop.wait()
    container.close()


controller_cli = typer.Typer(help="The reconciler, and what its dry-run soak showed.")
cli.add_typer(controller_cli, name="controller")


@controller_cli.callback(invoke_without_command=True)
def controller(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address of its probes and metrics.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of its probes and metrics.")] = 9102,
) -> None:
    """The reconciler, singleton by leader lock; serves /healthz, /readyz and /metrics on --port."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from api.controller_app import create_controller_app

    _setup_logging()
    settings = _settings()
    container = _container(settings)
    ctl = container.start_controller()
    log.info("controller running in %s mode, every %.0fs", ctl.mode, ctl.interval)
    try:
        uvicorn.run(create_controller_app(container), host=host, port=port, log_level="warning", log_config=None)
    finally:
        container.close()


@controller_cli.command("report")
def controller_report(
    since: Annotated[str, typer.Option(help="How far back: 7d, 12h, or an RFC 3339 timestamp.")] = "7d",
    json_output: Annotated[bool, typer.Option("--json", help="The whole report as JSON.")] = False,
) -> None:
    """The dry-run soak report: per repair kind, proposed / would have run / skipped and why; the targets that
    drifted most; and the verdict line. The same as GET /api/admin/repairs/report."""
    from datetime import UTC, datetime, timedelta

    from services.settings import parse_duration
    from services.soak import report

    now = datetime.now(UTC)
    try:
        start = now - timedelta(seconds=parse_duration(since))
    except ValueError:
        try:
            start = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            start = None
        if start is None or start.tzinfo is None:
            typer.echo(f"zlh: --since {since!r} is neither a duration (7d, 12h) nor a timestamp with a timezone",
                       err=True)
            raise typer.Exit(2) from None
    settings = _settings()
    container = _container(settings)
    try:
        result = report(container.app, container.db, start, settings.controller_mode, now)
    finally:
        container.close()
    if json_output:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    typer.echo(f"Controller soak report, {result['since']} to {result['until']} (mode now: {result['mode']})")
    typer.echo(f"{'kind':28} {'level':>5} {'proposed':>9} {'would run':>10} {'would esc.':>10}  skipped")
    for k in result["kinds"]:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(k["skipped"].items())) or "-"
        typer.echo(f"{k['kind']:28} {k['level']:>5} {k['proposed']:>9} {k['would_run']:>10} "
                   f"{k['would_escalate']:>10}  {skipped}")
    if result["targets"]:
        typer.echo("Targets that drifted most:")
        for t in result["targets"]:
            typer.echo(f"  {t['target']}: {t['drift_changes']} drift changes, {t['repairs']} repairs")
    typer.echo(result["verdict"])


@cli.command()
def agent(
    host: Annotated[str, typer.Option(help="Address to bind (keep it private).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8100,
    server_host: Annotated[str, typer.Option(help="The address game servers listen on (on a node of many: its "
                                             "address players reach, README \"More than one host\")")]
    = "127.0.0.1",
    servers_bind: Annotated[str | None, typer.Option(
        help="Address the servers listen on (default 127.0.0.1; 0.0.0.0 inside a Proxmox container).")] = None,
) -> None:
    """The node agent: instance processes, files, backups and console for the control plane."""
    from services.agent.driver import LocalDriver
    from services.agent.server import run_agent

    _setup_logging()
    settings = _settings()
    if not settings.agent_secret:
        typer.echo("zlh: refusing to start the agent without ZLH_AGENT_SECRET (it authenticates every call)",
                   err=True)
        raise typer.Exit(2)
    driver = LocalDriver(Path(settings.data_dir), host=server_host, cache_dir=settings.cache_dir,
                         disk_quota=settings.instance_disk_quota, bind=servers_bind)
    run_agent(driver, settings.agent_secret, host, port)


@users_cli.command("create")
def users_create(
    email: str, admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator.")] = False
) -> None:
    """Create a user and print {"id", "email", "admin", "token"} as JSON."""
    from domain.errors import DomainError
    from services.users import create_user

    container = _container()
    try:
        registered = create_user(container.app, email, admin)
        principal, token = registered.principal, registered.token
    except DomainError as exc:
        typer.echo(f"zlh: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        container.close()
    typer.echo(json.dumps({"id": str(principal.id), "email": principal.email, "admin": principal.admin,
                           "token": token}))


@projections_cli.command("status")
def projections_status() -> None:
    """Each projection with its position and lag."""
    container = _container()
    try:
        for item in container.projection_status():
            typer.echo(json.dumps({k: item[k] for k in ("name", "position", "head", "lag")}
                                  | {"dead_letters": len(item["dead_letters"])}))
    finally:
        container.close()


@projections_cli.command("rebuild")
def projections_rebuild(
    name: Annotated[str | None, typer.Argument(help="Projection name")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Rebuild every projection.")] = False,
) -> None:
    """Rebuild from position 0 into shadow tables and swap, while the API keeps serving."""
    container = _container()
    try:
        if all_ == (name is not None):
            typer.echo("zlh: give a projection NAME or --all", err=True)
            raise typer.Exit(2)
        if all_:  # every projection from one read of the log
            for runner, progress in zip(container.runners.values(), _rebuild_all_with_progress_bar(container),
                                        strict=True):
                typer.echo(json.dumps({"name": runner.name, **progress.as_dict()}))
            return
        runner = container.runners.get(name or "")
        if runner is None:
            typer.echo(f"zlh: no projection named {name!r}; known: {', '.join(container.runners)}", err=True)
            raise typer.Exit(2)
        progress = _rebuild_with_progress_bar(runner)
        typer.echo(json.dumps({"name": name, **progress.as_dict()}))
    finally:
        container.close()


@projections_cli.command("retry")
def projections_retry(name: Annotated[str, typer.Argument(help="A projection or a process manager")]) -> None:
    """Apply a follower's dead letters again once their cause is fixed.

    A read model is rebuilt from position 0 (so its dead letters are applied in order with everything
    else); a process manager's running workers handle each dead letter again, in log order.
    """
    container = _container()
    try:
        if name in container.runners:
            progress = _rebuild_with_progress_bar(container.runners[name])
            typer.echo(json.dumps({"name": name, "status": "rebuilt", **progress.as_dict()}))
            return
        try:
            status = container.retry_dead_letters(name)
        except KeyError:
            typer.echo(f"zlh: no projection or process manager named {name!r}", err=True)
            raise typer.Exit(2) from None
        typer.echo(json.dumps({"name": name, "status": status}))
    finally:
        container.close()


def _rebuild_all_with_progress_bar(container):  # type: ignore[no-untyped-def]
    """Rebuild every projection in one pass over the log, showing the slowest's position, events/s and ETA."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from services.infrastructure.projection_runner import rebuild_all

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} events/s"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"rebuilding {len(container.runners)} projections", total=None, rate="-")

        def show(p) -> None:  # type: ignore[no-untyped-def]
            bar.update(task, completed=p.position, total=max(p.head, p.position),
                       rate=f"{p.events_per_second:,.0f}")

        return rebuild_all(list(container.runners.values()), container.app, container.db, on_progress=show)


def _rebuild_with_progress_bar(runner):  # type: ignore[no-untyped-def]
    """Rebuild one projection, showing position/head, events/s and ETA on stderr as it goes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} events/s"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"rebuilding {runner.name}", total=None, rate="-")

        def show(p) -> None:  # type: ignore[no-untyped-def]
            bar.update(task, completed=p.position, total=max(p.head, p.position),
                       rate=f"{p.events_per_second:,.0f}")

        return runner.rebuild(on_progress=show)


#: `zlh audit` exit codes with verification: intact, broken (tampered), unchained (never chained, not tampered).
AUDIT_OK, AUDIT_BROKEN, AUDIT_UNCHAINED = 0, 1, 3


@audit_cli.command("stream")
def audit_stream(
    stream_id: str,
    verify: Annotated[bool, typer.Option("--verify", help="Also recompute the stream's hash chain.")] = False,
) -> None:
    """Print a stream's events as JSON lines, oldest first.

    With --verify, a last line {"verification": {...}} follows, and the exit code is 0 when the
    chain is intact, 1 when it is broken (the message names the first broken version), 3 when the
    stream's events were stored before hash chaining existed ("unchained"; not evidence of tampering).
    """
    from services.audit import stream_events, stream_events_tolerant, verify_stream

    try:
        sid = UUID(stream_id)
    except ValueError as exc:
        typer.echo(f"zlh: {stream_id!r} is not a stream id (a UUID)", err=True)
        raise typer.Exit(2) from exc
    container = _container()
    try:
        if verify:
            # Altered bytes may not decode any more: list such events rather than fail on them.
            events = stream_events_tolerant(container.app, sid)
            result = verify_stream(container.app, sid)
        else:
            events, result = stream_events(container.app, sid), None
    finally:
        container.close()
    if not events and (result is None or result.status == "missing"):
        typer.echo(f"zlh: no stream {sid}", err=True)
        raise typer.Exit(1)
    for event in events:
        typer.echo(json.dumps(event, sort_keys=True))
    if result is None:
        return
    typer.echo(json.dumps({"verification": _verdict(result)}, sort_keys=True))
    if result.status == "broken":
        typer.echo(f"zlh: stream {sid}: {result.reason}", err=True)
        raise typer.Exit(AUDIT_BROKEN)
    if not result.ok:
        typer.echo(f"zlh: stream {sid}: {result.reason}", err=True)
        raise typer.Exit(AUDIT_UNCHAINED)


def _verdict(result) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "stream_id": str(result.stream_id), "status": result.status, "ok": result.ok, "checked": result.checked,
        "first_broken_version": result.first_broken_version, "reason": result.reason, "head": result.head,
    }


@audit_cli.command("verify")
def audit_verify(
    all_: Annotated[bool, typer.Option("--all", help="Verify every stream in the log.")] = False,
) -> None:
    """Recompute every stream's hash chain, with a progress bar (on stderr).

    Prints one JSON line per stream that is not intact, then a summary line. Exit code: 1 if any
    stream is broken, else 3 if any is unchained (stored before hash chaining), else 0.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from services.audit import verify_all

    if not all_:
        typer.echo("zlh: give --all (one stream: zlh audit stream ID --verify)", err=True)
        raise typer.Exit(2)
    container = _container()
    try:
        columns = (TextColumn("verifying streams"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task("verify", total=None)
            results = verify_all(container.app, lambda done, total: progress.update(task, completed=done,
                                                                                    total=total))
    finally:
        container.close()
    counts = {"intact": 0, "broken": 0, "unchained": 0, "missing": 0}
    for result in results:
        counts[result.status] += 1
        if result.status != "intact":
            typer.echo(json.dumps(_verdict(result), sort_keys=True))
    typer.echo(json.dumps({"streams": len(results), **{k: v for k, v in counts.items() if k != "missing"}},
                          sort_keys=True))
    if counts["broken"] or counts["missing"]:
        typer.echo(f"zlh: {counts['broken']} of {len(results)} streams broken", err=True)
        raise typer.Exit(AUDIT_BROKEN)
    if counts["unchained"]:
        typer.echo(f"zlh: {counts['unchained']} of {len(results)} streams unchained (stored before hash chaining)",
                   err=True)
        raise typer.Exit(AUDIT_UNCHAINED)


# -- nodes (README "More than one host") -------------------------------------------------------------


def _nodes_call(action: Any) -> Any:
    """Run `action(container)` with the nodes read model caught up; a domain error is exit 1 with its message."""
    from domain.errors import DomainError

    container = _container()
    try:
        container.ensure_local_node()
        result = action(container)
        container.runners["nodes"].catch_up()
        return result, container
    except DomainError as exc:
        container.close()
        typer.echo(f"zlh: {exc.message}", err=True)
        raise typer.Exit(1) from exc


def _node_id(container: Any, name_or_id: str) -> Any:
    from uuid import UUID

    from domain.node import node_id_for_name

    try:
        return UUID(name_or_id)
    except ValueError:
        return node_id_for_name(name_or_id)


@nodes_cli.command("add")
def nodes_add(
    name: str,
    agent_url: Annotated[str, typer.Option(help="Where its `zlh agent` listens, e.g. http://10.0.0.2:8700")],
    public_host: Annotated[str, typer.Option(help="The address players reach the node at")],
    memory_mb: Annotated[int, typer.Option(help="Memory servers may take, in MB")],
    disk_mb: Annotated[int, typer.Option(help="Disk servers may take, in MB")],
    cpus: Annotated[float, typer.Option(help="CPUs servers may take")],
    port_range: Annotated[str, typer.Option(help="Ports for servers, e.g. 30000-30999")],
    secret_file: Annotated[str | None, typer.Option(help="A file holding the agent's secret "
                                                    "(default: ZLH_AGENT_SECRET)")] = None,
) -> None:
    """Add a node; prints it as JSON (never its secret)."""
    from pathlib import Path

    from projections import nodes as nodes_view
    from services import nodes

    secret = Path(secret_file).read_text().strip() if secret_file else (os.environ.get("ZLH_AGENT_SECRET") or "")
    request = nodes.NodeRequest(name, agent_url, secret, public_host, memory_mb, disk_mb, cpus, port_range)
    (node, _), container = _nodes_call(lambda c: nodes.register_node(c.app, c.secret_box, request))
    try:
        typer.echo(json.dumps(nodes_view.get(container.db, str(node.id))))
    finally:
        container.close()


@nodes_cli.command("list")
def nodes_list() -> None:
    """Every node as a JSON line: status, capacity, allocated, servers, last seen."""
    from projections import nodes as nodes_view
    from services import nodes

    _, container = _nodes_call(lambda c: None)
    try:
        for row in nodes.with_health(container.db, nodes_view.list_nodes(container.db)):
            typer.echo(json.dumps(row))
    finally:
        container.close()


def _node_command(name_or_id: str, command: str) -> None:
    from projections import nodes as nodes_view
    from services import nodes

    def run(c: Any) -> Any:
        node_id = _node_id(c, name_or_id)
        getattr(nodes, command)(c.app, node_id)
        return node_id

    node_id, container = _nodes_call(run)
    try:
        row = nodes_view.get(container.db, str(node_id))
        typer.echo(json.dumps({"id": str(node_id), "status": "removed" if command == "remove_node" else
                               (row or {}).get("status")}))
    finally:
        container.close()


@nodes_cli.command("cordon")
def nodes_cordon(node: Annotated[str, typer.Argument(help="name or id")]) -> None:
    """Place no new servers on the node."""
    _node_command(node, "cordon")


@nodes_cli.command("uncordon")
def nodes_uncordon(node: Annotated[str, typer.Argument(help="name or id")]) -> None:
    _node_command(node, "uncordon")


@nodes_cli.command("remove")
def nodes_remove(node: Annotated[str, typer.Argument(help="name or id")]) -> None:
    """Forget an empty node (exit 1 while servers are on it)."""
    _node_command(node, "remove_node")


def main() -> None:
    cli(prog_name="zlh")


if __name__ == "__main__":
    sys.exit(main())
